"""The registry: register / make / spec / registered, FamilySpec validation and JSON, error messages."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

import metarl
from metarl import registry
from metarl.envs.point_nav import PointNav
from metarl.registry import FamilySpec

BUILTINS = (
    "AntDir-v0",
    "AntUphill-v0",
    "AntVel-v0",
    "HalfCheetahDir-v0",
    "HalfCheetahUphill-v0",
    "HalfCheetahVel-v0",
    "PointNav-v0",
)
TEST_ID = "test/PointNavWide-v0"


@pytest.fixture
def test_spec() -> Iterator[FamilySpec]:
    """A namespaced test family (PointNav with wider goals), removed again whatever the test does."""
    spec = FamilySpec(
        id=TEST_ID,
        entry_point="metarl.envs.point_nav:PointNav",
        horizon=50,
        kwargs={"low": -2.0, "high": 2.0},
        tasks="goal ~ U[-2, 2]^2",
    )
    metarl.register(spec)
    try:
        yield spec
    finally:
        if any(s.id == TEST_ID for s in metarl.registered()):
            metarl.unregister(TEST_ID)


def _message(err: pytest.ExceptionInfo[BaseException]) -> str:
    """The raw message (str(KeyError) would add quotes around it)."""
    return str(err.value.args[0])


# ----------------------------------------------------------------------------------------------- listing, spec, make
def test_builtins_are_registered_sorted() -> None:
    ids = [s.id for s in metarl.registered()]
    assert set(BUILTINS) <= set(ids)
    assert ids == sorted(ids)


def test_register_make_spec_and_unregister(test_spec: FamilySpec) -> None:
    assert metarl.spec(TEST_ID) is test_spec
    assert TEST_ID in [s.id for s in metarl.registered()]
    family = metarl.make(TEST_ID)
    assert isinstance(family, PointNav)
    assert family.spec == test_spec and family.horizon == 50
    assert (family.low, family.high) == (-2.0, 2.0)
    metarl.unregister(TEST_ID)
    with pytest.raises(KeyError):
        metarl.spec(TEST_ID)
    with pytest.raises(KeyError):
        metarl.unregister(TEST_ID)


def test_make_accepts_an_unregistered_spec() -> None:
    spec = FamilySpec(id="test/Loose-v0", entry_point="metarl.envs.point_nav:PointNav", horizon=7)
    family = metarl.make(spec, high=0.1)
    assert family.horizon == 7 and family.high == 0.1
    assert "test/Loose-v0" not in [s.id for s in metarl.registered()]


def test_make_overrides_kwargs_and_horizon_without_touching_the_registry() -> None:
    family = metarl.make("HalfCheetahVel-v0", high=3.0, horizon=100)
    assert family.horizon == 100 and family.spec.horizon == 100
    assert family.high == 3.0 and family.low == 0.0
    assert family.spec.kwargs == {"low": 0.0, "high": 3.0}
    # the override reaches the task distribution: with U[0, 3] some of 200 draws exceed the default bound 2
    goal = family.sample_tasks(200, torch.Generator().manual_seed(0)).goal_vel
    assert goal.max() > 2.0 and goal.max() <= 3.0
    registered = metarl.spec("HalfCheetahVel-v0")
    assert registered.horizon == 200 and registered.kwargs == {"low": 0.0, "high": 2.0}


def test_spec_kwargs_are_copied() -> None:
    kwargs = {"low": 0.0}
    spec = FamilySpec(id="test/Copy-v0", entry_point="m:C", horizon=1, kwargs=kwargs)
    kwargs["low"] = 5.0
    assert spec.kwargs == {"low": 0.0}


# ----------------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("spec", metarl.registered(), ids=lambda s: s.id)
def test_spec_json_round_trip(spec: FamilySpec) -> None:
    text = spec.to_json()
    assert json.loads(text)["id"] == spec.id
    back = FamilySpec.from_json(text)
    assert back == spec
    assert back.to_json() == text


def test_overridden_spec_json_round_trip_rebuilds_the_same_family() -> None:
    family = metarl.make("PointNav-v0", low=-1.0, high=1.0, horizon=30)
    back = FamilySpec.from_json(family.spec.to_json())
    rebuilt = metarl.make(back)
    assert rebuilt.spec == family.spec and rebuilt.horizon == 30 and rebuilt.high == 1.0


# ----------------------------------------------------------------------------------------------- errors
def test_duplicate_id_raises_and_suggests_a_bumped_version(test_spec: FamilySpec) -> None:
    with pytest.raises(ValueError, match="HalfCheetahVel-v1"):
        metarl.register(metarl.spec("HalfCheetahVel-v0"))
    with pytest.raises(ValueError, match="test/PointNavWide-v1"):
        metarl.register(test_spec)
    assert metarl.spec(TEST_ID) is test_spec  # the failed registration did not replace the first


@pytest.mark.parametrize("call", [metarl.spec, metarl.make], ids=["spec", "make"])
def test_unknown_id_suggests_close_matches(call: object) -> None:
    with pytest.raises(KeyError) as err:
        call("HalfCheetahVell-v0")  # type: ignore[operator]
    message = _message(err)
    assert "Did you mean" in message and "'HalfCheetahVel-v0'" in message


def test_unknown_id_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(KeyError) as err:
        metarl.spec("Zzzzzz-v0")
    assert "Did you mean" not in _message(err) and "Zzzzzz-v0" in _message(err)


def test_bad_kwarg_raises_type_error_listing_accepted_names() -> None:
    with pytest.raises(TypeError) as err:
        metarl.make("HalfCheetahVel-v0", hgih=3.0)
    message = str(err.value)
    assert "'hgih'" in message
    # HalfCheetahVel takes low/high itself and ctrl_cost_weight/reset_noise_scale through **kwargs from its base
    for name in ("low", "high", "ctrl_cost_weight", "reset_noise_scale", "horizon"):
        assert name in message


@pytest.mark.parametrize(
    "bad_id", ["HalfCheetahVel", "HalfCheetahVel-v", "HalfCheetahVel-vx", "1Cheetah-v0", "a/b/C-v0", "C-v0 ", ""]
)
def test_invalid_ids_raise(bad_id: str) -> None:
    with pytest.raises(ValueError, match="Name-vN"):
        FamilySpec(id=bad_id, entry_point="m:C", horizon=1)


@pytest.mark.parametrize("good_id", ["C-v0", "my.pkg/Hopper_Mass-v12", "ns-1/A.b-v3"])
def test_valid_ids_are_accepted(good_id: str) -> None:
    assert FamilySpec(id=good_id, entry_point="m:C", horizon=1).id == good_id


@pytest.mark.parametrize("entry_point", ["metarl.envs.point_nav.PointNav", "", "PointNav"])
def test_invalid_entry_points_raise(entry_point: str) -> None:
    with pytest.raises(ValueError, match="entry_point"):
        FamilySpec(id="test/E-v0", entry_point=entry_point, horizon=1)


@pytest.mark.parametrize("entry_point", ["metarl.no_such_module:X", "metarl.envs.point_nav:NoSuchClass"])
def test_unresolvable_entry_point_fails_at_make(entry_point: str) -> None:
    spec = FamilySpec(id="test/Missing-v0", entry_point=entry_point, horizon=1)
    with pytest.raises(ImportError, match="entry point"):
        metarl.make(spec)


@pytest.mark.parametrize("horizon", [0, -1, 1.5, "200", None])
def test_invalid_horizons_raise(horizon: object) -> None:
    with pytest.raises(ValueError, match="horizon"):
        FamilySpec(id="test/H-v0", entry_point="m:C", horizon=horizon)  # type: ignore[arg-type]


def test_horizon_override_is_validated() -> None:
    with pytest.raises(ValueError, match="horizon"):
        metarl.make("PointNav-v0", horizon=0)


def test_non_json_kwargs_raise() -> None:
    with pytest.raises(ValueError, match="JSON"):
        FamilySpec(id="test/J-v0", entry_point="m:C", horizon=1, kwargs={"low": torch.zeros(1)})


@pytest.mark.parametrize(
    ("family_id", "overrides"),
    [
        ("HalfCheetahVel-v0", {"low": 2.0, "high": 1.0}),
        ("AntVel-v0", {"low": 3.0, "high": 0.0}),
        ("HalfCheetahUphill-v0", {"low_deg": 10.0, "high_deg": 5.0}),
        ("HalfCheetahUphill-v0", {"low_deg": 0.0, "high_deg": 60.0}),  # beyond ±45°
        ("AntUphill-v0", {"low_deg": 15.0, "high_deg": 0.0}),
        ("PointNav-v0", {"low": 0.5, "high": -0.5}),
        ("PointNav-v0", {"low": -math.inf, "high": 0.5}),
        ("PointNav-v0", {"max_step": 0.0}),
    ],
)
def test_bad_task_distribution_bounds_raise(family_id: str, overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        metarl.make(family_id, **overrides)


def test_registry_module_exports_match_package() -> None:
    # the package re-exports the registry functions themselves (users may import either)
    for name in ("register", "unregister", "make", "spec", "registered", "FamilySpec"):
        assert getattr(metarl, name) is getattr(registry, name)
