"""ODE integrators shared by every model in ``sim/`` (mean-field ODEs, eigenmode ODEs).

Interface (diffrax-like, but plain numpy/numba):

* a right-hand side is a function ``rhs(y, params) -> dy/dt`` for one state vector ``y``
  (shape ``(n,)``) and a float64 parameter vector ``params``; autonomous systems only, which is
  all the package needs.  For the batched integrator it must be a ``numba.njit`` function.
* :func:`rk4` integrates one (or a vectorised batch of) state(s) in plain Python/numpy with a
  fixed step and records on a grid;
* :func:`make_rk4_batch` compiles, once per right-hand side, a parallel (``numba.prange``)
  fixed-step RK4 over many initial conditions;
* :func:`solve_ivp_reference` is the independent check with ``scipy.integrate.solve_ivp``
  (adaptive RK45/DOP853/LSODA).

Every integrator stops with a ``FloatingPointError`` naming the step when the state goes
non-finite, instead of returning silent NaNs; the batched one marks such trajectories with a
status code and leaves the caller to report them (numba cannot raise with formatted messages
from inside ``prange``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit, prange
from scipy.integrate import solve_ivp

__all__ = ["rk4", "make_rk4_batch", "make_rk4_batch_into", "solve_ivp_reference", "time_grid"]

RHS = Callable[[np.ndarray, np.ndarray], np.ndarray]


def time_grid(t_end: float, dt: float, record_every: int) -> np.ndarray:
    """The recording times of a fixed-step run: ``0, k·dt·record_every, ...`` up to ``t_end``."""
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt={dt!r} must be finite and > 0")
    if record_every < 1:
        raise ValueError("record_every must be >= 1")
    n_steps = int(round(t_end / dt))
    return np.arange(0, n_steps // record_every + 1) * dt * record_every


def rk4(rhs: RHS, y0: np.ndarray, params: np.ndarray, *, t_end: float, dt: float,
        record_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-step classical RK4 for ``dy/dt = rhs(y, params)``.

    Returns ``(t, Y)`` with ``Y[k]`` the state at ``t[k]`` (see :func:`time_grid`).
    Raises ``FloatingPointError`` at the first step where the state is non-finite.
    """
    y = np.array(y0, dtype=np.float64, copy=True)
    params = np.asarray(params, dtype=np.float64)
    t = time_grid(t_end, dt, record_every)
    out = np.empty((t.size,) + y.shape)
    out[0] = y
    n_steps = (t.size - 1) * record_every
    for k in range(1, n_steps + 1):
        k1 = rhs(y, params)
        k2 = rhs(y + 0.5 * dt * k1, params)
        k3 = rhs(y + 0.5 * dt * k2, params)
        k4 = rhs(y + dt * k3, params)
        y = y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if not np.all(np.isfinite(y)):
            raise FloatingPointError(f"rk4: state became non-finite at step {k} (t={k * dt:g})")
        if k % record_every == 0:
            out[k // record_every] = y
    return t, out


_COMPILED: dict[int, Callable] = {}


def make_rk4_batch(rhs_jit: Callable) -> Callable:
    """Compile a parallel fixed-step RK4 for a ``numba.njit`` right-hand side.

    The returned function ``run(Y0, params, dt, n_steps, record_every) -> (traj, status)`` takes
    ``Y0`` of shape (K, n) and returns ``traj`` (K, n_steps // record_every + 1, n) and
    ``status`` (K,) int8: 0 ok, 1 the trajectory went non-finite (its remaining records are NaN).
    Compiled kernels are cached per right-hand side for the life of the process.
    """
    key = id(rhs_jit)
    if key in _COMPILED:
        return _COMPILED[key]

    @njit(parallel=True, cache=False)
    def run(Y0, params, dt, n_steps, record_every):
        K, n = Y0.shape
        R = n_steps // record_every + 1
        traj = np.full((K, R, n), np.nan)
        status = np.zeros(K, dtype=np.int8)
        for i in prange(K):
            y = Y0[i].copy()
            traj[i, 0] = y
            for k in range(1, n_steps + 1):
                k1 = rhs_jit(y, params)
                k2 = rhs_jit(y + 0.5 * dt * k1, params)
                k3 = rhs_jit(y + 0.5 * dt * k2, params)
                k4 = rhs_jit(y + dt * k3, params)
                y = y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
                ok = True
                for j in range(n):
                    if not np.isfinite(y[j]):
                        ok = False
                if not ok:
                    status[i] = 1
                    break
                if k % record_every == 0:
                    traj[i, k // record_every] = y
        return traj, status

    _COMPILED[key] = run
    return run


_COMPILED_INTO: dict[int, Callable] = {}


def make_rk4_batch_into(rhs_into: Callable) -> Callable:
    """Allocation-free variant of :func:`make_rk4_batch` for a right-hand side written as
    ``rhs_into(y, params, out)`` (fills ``out`` with dy/dt; ``numba.njit``).  Same call
    signature and return values as :func:`make_rk4_batch`'s ``run``; the stage buffers are
    allocated once per trajectory, which matters when the right-hand side is cheap (tabulated
    expectations) and allocation would dominate.  A non-finite stage marks the trajectory
    with status 1 like the allocating version."""
    key = id(rhs_into)
    if key in _COMPILED_INTO:
        return _COMPILED_INTO[key]

    @njit(parallel=True, cache=False)
    def run(Y0, params, dt, n_steps, record_every):
        K, n = Y0.shape
        R = n_steps // record_every + 1
        traj = np.full((K, R, n), np.nan)
        status = np.zeros(K, dtype=np.int8)
        for i in prange(K):
            y = Y0[i].copy()
            k1 = np.empty(n)
            k2 = np.empty(n)
            k3 = np.empty(n)
            k4 = np.empty(n)
            tmp = np.empty(n)
            traj[i, 0] = y
            for k in range(1, n_steps + 1):
                rhs_into(y, params, k1)
                for j in range(n):
                    tmp[j] = y[j] + 0.5 * dt * k1[j]
                rhs_into(tmp, params, k2)
                for j in range(n):
                    tmp[j] = y[j] + 0.5 * dt * k2[j]
                rhs_into(tmp, params, k3)
                for j in range(n):
                    tmp[j] = y[j] + dt * k3[j]
                rhs_into(tmp, params, k4)
                ok = True
                for j in range(n):
                    y[j] = y[j] + (dt / 6.0) * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j])
                    if not np.isfinite(y[j]):
                        ok = False
                if not ok:
                    status[i] = 1
                    break
                if k % record_every == 0:
                    for j in range(n):
                        traj[i, k // record_every, j] = y[j]
        return traj, status

    _COMPILED_INTO[key] = run
    return run


def solve_ivp_reference(rhs: RHS, y0: np.ndarray, params: np.ndarray, t_eval: np.ndarray, *,
                        method: str = "DOP853", rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """Independent check with ``scipy.integrate.solve_ivp``; returns states at ``t_eval``."""
    params = np.asarray(params, dtype=np.float64)
    sol = solve_ivp(lambda _t, y: rhs(y, params), (float(t_eval[0]), float(t_eval[-1])),
                    np.asarray(y0, dtype=np.float64), t_eval=t_eval, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise FloatingPointError(f"solve_ivp failed: {sol.message}")
    return sol.y.T
