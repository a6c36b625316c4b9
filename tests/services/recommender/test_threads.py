"""serve keeps numpy's BLAS to one thread per request thread: OpenBLAS's own pool, spinning
between the small products each request multiplies, took 61 % of the API's CPU."""

import numpy as np
from threadpoolctl import threadpool_info

from services.recommender.service import single_threaded_blas


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_serve_runs_numpy_with_one_blas_thread_and_can_give_the_pool_back():
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded
    before = _blas_threads()
    assert before, "numpy's BLAS library was not found"
    limiter = single_threaded_blas()
    try:
        assert _blas_threads() == [1] * len(before)
    finally:
        limiter.restore_original_limits()
    assert _blas_threads() == before
