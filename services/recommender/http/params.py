"""Path and query parameters that several routes share, declared once.

Prices are bounded like the contract's ``Price`` (schemas/products.py): ``inf`` or ``nan``
would otherwise reach the vector store's filter as a number.
"""

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query

from schemas.base import ID_PATTERN
from schemas.limits import LIMITS
from schemas.products import Price
from services.vectors.store import SearchFilters

IdPath = Annotated[str, Path(min_length=1, max_length=LIMITS.id_chars, pattern=ID_PATTERN)]
K = Annotated[int, Query(ge=1, le=LIMITS.recommendations, description="How many items.")]
PriceQuery = Annotated[Price | None, Query(description="A finite price, 0 to 10,000,000 (as in the product contract).")]
CategoryQuery = Annotated[str | None, Query(min_length=1, max_length=LIMITS.category_chars, description="Only this category.")]


def search_filters(
    category: CategoryQuery = None,
    min_price: PriceQuery = None,
    max_price: PriceQuery = None,
    in_stock: Annotated[bool | None, Query(description="Only products in stock (the default), or only out of stock.")] = True,
) -> SearchFilters:
    """The filters of a recommendation or similar-products request."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise HTTPException(422, "min_price is greater than max_price")
    return SearchFilters(category=category, min_price=min_price, max_price=max_price, in_stock=in_stock)


Filters = Annotated[SearchFilters, Depends(search_filters)]
