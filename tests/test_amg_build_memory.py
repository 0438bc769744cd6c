"""The light helpers of the AMG build (lightweight/fem/amg.py): the Numba symbolic product gives
SciPy's pattern of |A| |B| (no cancellation), the zero-free copy equals eliminate_zeros, and
fixed_rows finds the eliminated (unit) rows."""

import numpy as np
import pytest
import scipy.sparse as sp

from lightweight.fem.amg import _product_pattern, fixed_rows, without_explicit_zeros


def _random_csr(n, m, density, seed, zeros_every=0):
    A = sp.random(n, m, density=density, random_state=seed, format="csr")
    A.sort_indices()
    if zeros_every:
        A.data[::zeros_every] = 0.0
    return sp.csr_matrix((A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32)), shape=A.shape)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunks", [1, 3])
def test_symbolic_product_is_scipys_pattern_of_the_absolute_values(seed, chunks):
    A = _random_csr(60, 45, 0.1, seed)
    B = _random_csr(45, 30, 0.15, seed + 50)
    B.data[: B.nnz // 2] *= -1.0          # cancellations must not drop entries
    C = _product_pattern(A, B, chunks)
    ones = [sp.csr_matrix((np.ones(M.nnz), M.indices, M.indptr), shape=M.shape) for M in (A, B)]
    ref = (ones[0] @ ones[1]).tocsr()
    ref.sort_indices()
    assert C.indices.dtype == np.int32 and C.indptr.dtype == np.int32
    assert np.array_equal(C.indptr, ref.indptr) and np.array_equal(C.indices, ref.indices)
    assert not np.any(C.data)


@pytest.mark.parametrize("seed", range(4))
def test_zero_free_copy_equals_eliminate_zeros(seed):
    A = _random_csr(50, 50, 0.1, seed, zeros_every=3)
    A = sp.csr_matrix((A.data, A.indices, A.indptr), shape=A.shape)
    expected = A.copy()
    expected.eliminate_zeros()
    got = without_explicit_zeros(A)
    assert got.indices.dtype == A.indices.dtype
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)


def test_fixed_rows_are_the_unit_rows_of_an_eliminated_matrix():
    K = sp.random(30, 30, density=0.2, random_state=3, format="csr")
    K = (K + K.T + 30 * sp.eye(30)).tocsr()
    fixed = np.array([2, 7, 29])
    K = K.tolil()
    for d in fixed:
        K[d, :] = 0.0
        K[:, d] = 0.0
        K[d, d] = 1.0
    K = K.tocsr()
    # eliminated entries stay as explicit zeros in the pattern, as DirichletMask leaves them
    K.data[K.data == 0] = 0.0
    mask = fixed_rows(K)
    assert np.array_equal(np.flatnonzero(mask), fixed)
    empty_last = sp.csr_matrix((np.array([1.0]), np.array([0]), np.array([0, 1, 1])), shape=(2, 2))
    assert fixed_rows(empty_last).tolist() == [True, False]
