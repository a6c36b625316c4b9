"""GET /v1/experiments and /v1/experiments/{id}: the report `shelfsight experiments report` prints.

A shop's sales figures are not for the public: these routes need a secret key (`X-API-Key`,
SHELFSIGHT_API_KEYS) on the API port and on the ops port alike (an ops port is often reachable
from a whole scrape network); without secret keys configured they answer 403 to everyone.
"""

from collections.abc import Callable
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from schemas.experiments import Experiment, ExperimentReport
from services.recommender.http.guards import Access, ApiKeys
from state.experiments import COMPARED

Reports = Callable[[str, str], ExperimentReport]
Listing = Callable[[], list[Experiment]]


def router(report: Reports, listing: Listing, keys: ApiKeys) -> APIRouter:
    """``keys``: the API's keys, of which a secret one is required."""
    routes = APIRouter(tags=["experiments"], dependencies=[Depends(_secret_key_of(keys))])

    @routes.get("/v1/experiments", response_model=list[Experiment], responses={403: {}})
    async def experiments() -> list[Experiment]:
        """Every experiment, running or not, oldest first."""
        return await run_in_threadpool(listing)

    @routes.get("/v1/experiments/{experiment_id}", response_model=ExperimentReport, responses={403: {}, 404: {}})
    async def experiment_report(
        experiment_id: Annotated[str, Path(max_length=48)],
        metric: Annotated[str, Query(pattern=f"^({'|'.join(COMPARED)})$")] = "clicks",
    ) -> ExperimentReport:
        """Per variant: shoppers, rates with 95 % intervals; each variant against the control with an
        always-valid p-value; the sample-ratio check. Reading it counts as a reading of the sequential test."""
        from state.experiments import ExperimentError

        try:
            return await run_in_threadpool(report, experiment_id, metric)
        except ExperimentError as error:
            raise HTTPException(404, str(error)) from None

    return routes


def dashboard() -> APIRouter:
    """GET /experiments: the dashboard page. It holds no figures: it asks the routes above for them,
    with the secret key the operator types in (kept in the tab's session storage only)."""
    page = (resources.files("services.recommender") / "web" / "experiments.html").read_text()
    routes = APIRouter()

    @routes.get("/experiments", include_in_schema=False)
    def experiments_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    return routes


def _secret_key_of(keys: ApiKeys) -> Callable[[str | None], None]:
    def secret_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if keys.access(x_api_key) is not Access.ALL:
            raise HTTPException(403, "experiments need a secret key in X-API-Key (one of SHELFSIGHT_API_KEYS)")

    return secret_key
