"""The empirical instrument model (qsocube.builder.simulate.instrument) on synthetic models:
the requested median S/N is reached, results do not depend on batching, masks stay in
range, bad bits and BRIGHTSKY treat ivar as the package data say, seeds reproduce."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qsocube.builder.simulate import instrument

GROUPS = ("boss", "sdss")
B = 32
KEYS = ("flux", "ivar", "sky", "and_mask", "or_mask", "wdisp", "distortion", "amplitude", "row")


def synthetic_batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power-law quasar-like models with one broad line, on BOSS-like pixel ranges, and
    target S/N from 1.5 to 40 (no real data needed)."""
    rng = np.random.default_rng(seed)
    amp = rng.lognormal(np.log(5), 0.7, n)
    line = 1 + 2 * np.exp(-0.5 * ((instrument.WAVE - 6000) / 40) ** 2)
    model = amp[:, None] * (instrument.WAVE / 5000.0) ** -1.5 * line
    start, stop = rng.integers(15, 40, n), rng.integers(4600, 4675, n)
    cols = np.arange(instrument.NPIX)
    in_range = (cols >= start[:, None]) & (cols <= stop[:, None])
    return np.where(in_range, model, 0.0), in_range, rng.uniform(1.5, 40, n)


def rngs(seed: int, n: int = B, first: int = 0) -> list[np.random.Generator]:
    """One generator per spectrum, keyed on (seed, spectrum index)."""
    return [np.random.default_rng([seed, first + k]) for k in range(n)]


def bad(out: dict) -> np.ndarray:
    return (out["and_mask"] & instrument.BAD_BITS) != 0


def with_mask_p(data: instrument.InstrumentData, rule) -> instrument.InstrumentData:
    """data with mask_p[c] replaced by rule(kind, bit, rho, p) for every channel c."""
    p = np.array([rule(int(k), int(b), rho, pc) for (k, b, rho, *_), pc in
                  zip(data.mask_par, data.mask_p, strict=True)])
    return dataclasses.replace(data, mask_p=p)


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(B)


@pytest.fixture(scope="module", params=GROUPS)
def observed(request, batch):
    data = instrument.load_data(request.param)
    model, in_range, sn = batch
    return data, instrument.observe(model, in_range, sn, rngs(7), data)


def test_target_median_sn_is_reached(observed, batch):
    """SN_MEDIAN_ALL: median of flux * sqrt(ivar) over in-range pixels with ivar > 0 and
    none of the product's bad bits."""
    _, out = observed
    _, in_range, sn = batch
    good = in_range & (out["ivar"] > 0) & ~bad(out)
    snr = out["flux"] * np.sqrt(out["ivar"])
    achieved = np.array([np.median(snr[k][good[k]]) for k in range(B)])
    np.testing.assert_allclose(achieved, sn, rtol=1e-10)
    assert np.all(good.sum(1) > 0.9 * in_range.sum(1))


def test_batch_split_does_not_change_results(observed, batch):
    data, whole = observed
    model, in_range, sn = batch
    parts = [(0, 1), (1, 13), (13, B)]
    pieces = [instrument.observe(model[a:b], in_range[a:b], sn[a:b], rngs(7, b - a, a), data)
              for a, b in parts]
    for key in KEYS:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), whole[key],
                                      err_msg=key)


def test_outputs_confined_to_range(observed, batch):
    _, out = observed
    _, in_range, _ = batch
    for key in ("and_mask", "or_mask", "flux", "ivar", "sky", "wdisp"):
        assert np.all(out[key][~in_range] == 0), key
        assert np.all(np.isfinite(out[key])), key
    assert np.all(out["distortion"][~in_range] == 1)
    assert np.any(out["or_mask"][in_range] != 0), "no mask bit was drawn at all"
    assert np.all((out["and_mask"] & ~out["or_mask"]) == 0), "and_mask must be within or_mask"
    assert np.all(out["ivar"] >= 0) and np.all(out["sky"][in_range] > 0)


@pytest.mark.parametrize("group", GROUPS)
def test_bad_bits_zero_ivar_as_the_data_say(group, batch):
    """The data say whether bad bits zero ivar (SDSS-I/II files: yes, BOSS: no). With
    frequent bad bits, ivar is 0 on all of them under the flag and (but for the rare
    'ivar = 0' channel) kept without it; nothing else changes with the flag."""
    data = instrument.load_data(group)
    assert data.zero_ivar_on_bad_bits == (group == "sdss")

    def frequent_bad(kind, bit, rho, p):  # and_mask bad bits at 3% (not whole spectra)
        is_bad = kind == 0 and (instrument.BAD_BITS >> bit) & 1
        return np.full_like(p, 0.03) if is_bad and rho < 1 else p

    data = with_mask_p(data, frequent_bad)
    model, in_range, sn = batch
    out = {flag: instrument.observe(model, in_range, sn, rngs(3), dataclasses.replace(
        data, zero_ivar_on_bad_bits=flag)) for flag in (False, True)}
    hit = bad(out[True]) & in_range
    assert hit.sum() > 100
    assert np.all(out[True]["ivar"][hit] == 0)
    assert np.mean(out[False]["ivar"][hit] > 0) > 0.95  # only the 'ivar0' channel zeroes
    for key in ("flux", "sky", "and_mask", "or_mask", "amplitude"):
        np.testing.assert_array_equal(out[True][key], out[False][key], err_msg=key)
    np.testing.assert_array_equal(out[True]["ivar"][~hit], out[False]["ivar"][~hit])


def test_brightsky_pixels_keep_their_ivar(observed, batch):
    """BRIGHTSKY is a flag, not a rejection: with the 'ivar = 0' channel switched off,
    every in-range BRIGHTSKY pixel free of bad bits keeps ivar > 0."""
    data, _ = observed
    model, in_range, sn = batch
    data = with_mask_p(data, lambda kind, bit, rho, p: p * 0 if kind == 2 else p)
    out = instrument.observe(model, in_range, sn, rngs(7), data)
    assert not instrument.BAD_BITS & instrument.BRIGHTSKY
    flagged = ((out["and_mask"] | out["or_mask"]) & instrument.BRIGHTSKY) != 0
    flagged &= in_range & ~bad(out)
    assert flagged.sum() > 100
    assert np.all(out["ivar"][flagged] > 0)


def test_deterministic_for_a_seed(observed, batch):
    data, out = observed
    model, in_range, sn = batch
    again = instrument.observe(model[:8], in_range[:8], sn[:8], rngs(7, 8), data)
    for key in KEYS:
        np.testing.assert_array_equal(again[key], out[key][:8], err_msg=key)
    other = instrument.observe(model[:8], in_range[:8], sn[:8], rngs(8, 8), data)
    assert not np.array_equal(other["flux"], again["flux"])
    assert not np.array_equal(other["sky"], again["sky"])
