"""The catalogue alias on a real redis-server: a switch is a compare-and-set on its revision."""

import json
import uuid

import pytest

from state.catalogue import AliasChanged, CatalogueAlias, CatalogueVersion, decode_alias, encode_alias, read_alias, write_alias
from state.keys import Keys

A = CatalogueVersion("m-1", "products", "/ckpt/a", False, "shelfsight-embedder")
B = CatalogueVersion("m-2", "products-m-2", "/ckpt/b", True, "shelfsight-embedder-m-2")


@pytest.mark.redis
def test_two_switches_from_the_same_revision_cannot_both_land(redis_client):
    keys = Keys(f"alias-{uuid.uuid4().hex[:8]}:")
    assert read_alias(redis_client, keys) is None, "nothing switched yet"
    write_alias(redis_client, keys, CatalogueAlias(B, A, 1))
    with pytest.raises(AliasChanged, match="--status"):
        write_alias(redis_client, keys, CatalogueAlias(A, B, 1))  # read before the first landed
    assert read_alias(redis_client, keys) == CatalogueAlias(B, A, 1)
    write_alias(redis_client, keys, CatalogueAlias(A, B, 2))
    assert read_alias(redis_client, keys) == CatalogueAlias(A, B, 2)
    redis_client.delete(keys.catalogue)


@pytest.mark.parametrize(
    "field",
    [{"collection": "../../etc"}, {"collection": "/tmp/x"}, {"group": "shelfsight-profiles"}, {"checkpoint": "relative/ckpt"}],
)
def test_an_alias_that_names_a_path_or_another_services_group_is_refused(field):
    doc = json.loads(encode_alias(CatalogueAlias(B, A, 1)))
    doc["live"] |= field
    with pytest.raises(ValueError, match="may not"):
        decode_alias(json.dumps(doc))
