"""`QueuePolicy`, `DynamicBatcher`, `ModelConfig`: defaults, every validation rule, and the derived values."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from pybind_serve.config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from pybind_serve.errors import ConfigurationError


def problems_of(cls: type, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        cls(**kwargs)
    return info.value.problems


# --- QueuePolicy -------------------------------------------------------------------------------------------


def test_queue_policy_defaults() -> None:
    policy = QueuePolicy()
    assert policy.timeout_action is TimeoutAction.REJECT
    assert (policy.default_timeout_us, policy.allow_timeout_override, policy.max_queue_size) == (0, True, 0)


@pytest.mark.parametrize(("given", "expected"), [("REJECT", TimeoutAction.REJECT), ("DELAY", TimeoutAction.DELAY)])
def test_timeout_action_from_string(given: str, expected: TimeoutAction) -> None:
    policy = QueuePolicy(timeout_action=given)  # type: ignore[arg-type]
    assert policy.timeout_action is expected
    assert policy.timeout_action == given  # a str enum: equal to its value


@pytest.mark.parametrize("action", ["reject", "DROP", "", None, 1])
def test_timeout_action_must_be_reject_or_delay(action: Any) -> None:
    with pytest.raises(
        ConfigurationError, match="timeout_action must be REJECT or DELAY, got " + re.escape(repr(action))
    ):
        QueuePolicy(timeout_action=action)


@pytest.mark.parametrize("field", ["default_timeout_us", "max_queue_size"])
@pytest.mark.parametrize("value", [-1, 1.5, "10", None, True])
def test_queue_policy_ints_must_be_non_negative_ints(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"{field} must be an int >= 0, got {re.escape(repr(value))}"):
        QueuePolicy(**{field: value})


@pytest.mark.parametrize("value", [1, "yes", None])
def test_allow_timeout_override_must_be_a_bool(value: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=f"allow_timeout_override must be a bool, got {re.escape(repr(value))}"
    ):
        QueuePolicy(allow_timeout_override=value)


def test_queue_policy_reports_every_problem_at_once() -> None:
    problems = problems_of(
        QueuePolicy, timeout_action="x", default_timeout_us=-1, allow_timeout_override=0, max_queue_size=-5
    )
    assert problems == [
        "timeout_action must be REJECT or DELAY, got 'x'",
        "default_timeout_us must be an int >= 0, got -1",
        "max_queue_size must be an int >= 0, got -5",
        "allow_timeout_override must be a bool, got 0",
    ]


def test_queue_policy_message_format() -> None:
    with pytest.raises(ConfigurationError) as info:
        QueuePolicy(max_queue_size=-1)
    assert str(info.value) == "QueuePolicy is invalid:\n  - max_queue_size must be an int >= 0, got -1"


@pytest.mark.parametrize(
    ("default", "override", "requested", "expected"),
    [
        (0, True, 0, 0),  # no default, nothing asked: no timeout
        (0, True, 500, 500),  # no default: the request's own applies
        (100, True, 0, 100),  # nothing asked: the default
        (100, True, -5, 100),  # a negative request counts as not asked
        (100, True, 50, 50),  # may shorten the default
        (100, True, 500, 100),  # may not lengthen it
        (100, True, 100, 100),
        (100, False, 50, 100),  # override off: always the default
        (0, False, 50, 0),
    ],
)
def test_timeout_us(default: int, override: bool, requested: int, expected: int) -> None:
    policy = QueuePolicy(default_timeout_us=default, allow_timeout_override=override)
    assert policy.timeout_us(requested) == expected


def test_queue_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        QueuePolicy().max_queue_size = 3  # type: ignore[misc]


# --- DynamicBatcher ----------------------------------------------------------------------------------------


def test_dynamic_batcher_defaults() -> None:
    b = DynamicBatcher()
    assert (b.max_queue_delay_us, b.preferred_batch_sizes, b.priority_levels, b.default_priority_level) == (0, (), 0, 0)
    assert b.default_queue_policy == QueuePolicy()
    assert dict(b.priority_queue_policies) == {}
    assert b.preserve_ordering is False


@pytest.mark.parametrize("value", [-1, 0.5, "100", None, False])
def test_max_queue_delay_us_must_be_a_non_negative_int(value: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=f"max_queue_delay_us must be an int >= 0, got {re.escape(repr(value))}"
    ):
        DynamicBatcher(max_queue_delay_us=value)


@pytest.mark.parametrize(
    ("given", "expected"), [([8, 2, 4], (2, 4, 8)), ((4, 4, 2, 2), (2, 4)), ([], ()), ((1,), (1,))]
)
def test_preferred_batch_sizes_are_sorted_and_deduplicated(given: Any, expected: tuple[int, ...]) -> None:
    assert DynamicBatcher(preferred_batch_sizes=given).preferred_batch_sizes == expected


@pytest.mark.parametrize("sizes", [4, (0,), (2, -1), (2, 2.0), (True,), ("4",), "4"])
def test_preferred_batch_sizes_must_be_positive_ints(sizes: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=f"preferred_batch_sizes must be positive ints, got {re.escape(repr(sizes))}"
    ):
        DynamicBatcher(preferred_batch_sizes=sizes)


def test_preferred_batch_sizes_none_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="preferred_batch_sizes must be positive ints, got None"):
        DynamicBatcher(preferred_batch_sizes=None)  # type: ignore[arg-type]


def test_preferred_batch_sizes_from_an_iterator_are_not_lost() -> None:
    batcher = DynamicBatcher(preferred_batch_sizes=(s for s in [8, 4]))  # type: ignore[arg-type]
    assert batcher.preferred_batch_sizes == (4, 8)


@pytest.mark.parametrize("field", ["priority_levels", "default_priority_level"])
@pytest.mark.parametrize("value", [-1, 1.0, "2", None, True])
def test_priority_ints_must_be_non_negative_ints(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"{field} must be an int >= 0, got {re.escape(repr(value))}"):
        DynamicBatcher(**{field: value})


@pytest.mark.parametrize(("levels", "expected"), [(1, 1), (2, 2), (5, 5)])
def test_default_priority_level_zero_means_the_lowest_level(levels: int, expected: int) -> None:
    assert DynamicBatcher(priority_levels=levels).default_priority_level == expected


def test_default_priority_level_zero_without_priorities_stays_zero() -> None:
    assert DynamicBatcher(priority_levels=0, default_priority_level=0).default_priority_level == 0


def test_explicit_default_priority_level_is_kept() -> None:
    assert DynamicBatcher(priority_levels=3, default_priority_level=2).default_priority_level == 2


@pytest.mark.parametrize(("levels", "default"), [(2, 3), (0, 1), (1, 2)])
def test_default_priority_level_must_be_a_level(levels: int, default: int) -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape(f"default_priority_level must be in 1..{levels} (priority_levels), got {default}"),
    ):
        DynamicBatcher(priority_levels=levels, default_priority_level=default)


@pytest.mark.parametrize(("levels", "key"), [(2, 0), (2, 3), (0, 1), (2, "1"), (2, -1)])
def test_priority_queue_policies_keys_must_be_levels(levels: int, key: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape(f"priority_queue_policies key {key!r} must be a level in 1..{levels}")
    ):
        DynamicBatcher(priority_levels=levels, priority_queue_policies={key: QueuePolicy()})


def test_priority_queue_policies_bool_key_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("priority_queue_policies key True must be a level in 1..2")):
        DynamicBatcher(priority_levels=2, priority_queue_policies={True: QueuePolicy()})


def test_priority_queue_policies_values_must_be_queue_policies() -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("priority_queue_policies[1] must be a QueuePolicy, got {'max_queue_size': 2}"),
    ):
        DynamicBatcher(priority_levels=2, priority_queue_policies={1: {"max_queue_size": 2}})  # type: ignore[dict-item]


def test_priority_queue_policies_none_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="priority_queue_policies"):
        DynamicBatcher(priority_levels=2, priority_queue_policies=None)  # type: ignore[arg-type]


def test_default_queue_policy_must_be_a_queue_policy() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("default_queue_policy must be a QueuePolicy, got {}")):
        DynamicBatcher(default_queue_policy={})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, "true", None])
def test_preserve_ordering_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"preserve_ordering must be a bool, got {re.escape(repr(value))}"):
        DynamicBatcher(preserve_ordering=value)


def test_dynamic_batcher_reports_every_problem_at_once() -> None:
    problems = problems_of(
        DynamicBatcher,
        max_queue_delay_us=-1,
        preferred_batch_sizes=(0,),
        priority_levels=2,
        default_priority_level=3,
        priority_queue_policies={5: QueuePolicy()},
        default_queue_policy=None,
        preserve_ordering="no",
    )
    assert problems == [
        "max_queue_delay_us must be an int >= 0, got -1",
        "preferred_batch_sizes must be positive ints, got (0,)",
        "default_priority_level must be in 1..2 (priority_levels), got 3",
        "priority_queue_policies key 5 must be a level in 1..2",
        "default_queue_policy must be a QueuePolicy, got None",
        "preserve_ordering must be a bool, got 'no'",
    ]


def test_dynamic_batcher_message_names_it() -> None:
    with pytest.raises(
        ConfigurationError, match=r"\ADynamicBatcher is invalid:\n  - max_queue_delay_us must be an int >= 0, got -1\Z"
    ):
        DynamicBatcher(max_queue_delay_us=-1)


def test_queue_policy_per_level_falls_back_to_the_default() -> None:
    slow, fast = QueuePolicy(default_timeout_us=9), QueuePolicy(max_queue_size=1)
    b = DynamicBatcher(priority_levels=3, default_queue_policy=slow, priority_queue_policies={2: fast})
    assert [b.queue_policy(level) for level in (1, 2, 3)] == [slow, fast, slow]


def test_priority_queue_policies_are_read_only_and_copied() -> None:
    given = {1: QueuePolicy()}
    b = DynamicBatcher(priority_levels=1, priority_queue_policies=given)
    given[2] = QueuePolicy()
    assert list(b.priority_queue_policies) == [1]
    with pytest.raises(TypeError):
        b.priority_queue_policies[1] = QueuePolicy()  # type: ignore[index]


@pytest.mark.parametrize(
    ("levels", "default", "priority", "expected"),
    [
        (3, 0, 0, 3),  # not given: the default level, which defaults to the lowest
        (3, 2, 0, 2),
        (3, 2, -4, 2),  # negative counts as not given
        (3, 0, 1, 1),
        (3, 0, 2, 2),
        (3, 0, 3, 3),
        (3, 0, 7, 3),  # clamped to the lowest level
        (0, 0, 0, 1),  # no priorities: everything in one queue, level 1
        (0, 0, 5, 1),
    ],
)
def test_level_of(levels: int, default: int, priority: int, expected: int) -> None:
    b = DynamicBatcher(priority_levels=levels, default_priority_level=default)
    assert b.level_of(priority) == expected


def test_dynamic_batcher_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DynamicBatcher().priority_levels = 2  # type: ignore[misc]


# --- ModelConfig -------------------------------------------------------------------------------------------


def test_model_config_defaults() -> None:
    c = ModelConfig()
    assert (c.batching, c.max_batch_size, c.decoupled, c.instances) == (True, 16, False, None)
    assert c.batcher == DynamicBatcher()
    assert c.effective_max_batch_size == 16


@pytest.mark.parametrize(("batching", "size", "expected"), [(True, 8, 8), (False, 8, 0), (True, 1, 1), (False, 1, 0)])
def test_effective_max_batch_size(batching: bool, size: int, expected: int) -> None:
    config = ModelConfig(batching=batching, max_batch_size=size)
    assert config.effective_max_batch_size == expected
    assert config.max_batch_size == size


@pytest.mark.parametrize("field", ["batching", "decoupled"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_must_be_bools(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"{field} must be a bool, got {re.escape(repr(value))}"):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("size", [0, -1, 2.0, "8", None, True])
def test_max_batch_size_must_be_a_positive_int(size: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"max_batch_size must be an int >= 1, got {re.escape(repr(size))}"):
        ModelConfig(max_batch_size=size)


def test_preferred_sizes_above_max_batch_size_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("preferred_batch_sizes [16, 32] exceed max_batch_size 8")):
        ModelConfig(max_batch_size=8, batcher=DynamicBatcher(preferred_batch_sizes=(32, 4, 16, 8)))


def test_preferred_sizes_equal_to_max_batch_size_are_fine() -> None:
    config = ModelConfig(max_batch_size=8, batcher=DynamicBatcher(preferred_batch_sizes=(8, 4)))
    assert config.batcher.preferred_batch_sizes == (4, 8)


def test_preferred_sizes_are_not_checked_without_batching() -> None:
    config = ModelConfig(batching=False, max_batch_size=2, batcher=DynamicBatcher(preferred_batch_sizes=(4,)))
    assert config.effective_max_batch_size == 0


@pytest.mark.parametrize("batcher", [None, {}, QueuePolicy()])
def test_batcher_must_be_a_dynamic_batcher(batcher: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"batcher must be a DynamicBatcher, got {re.escape(repr(batcher))}"):
        ModelConfig(batcher=batcher)


@pytest.mark.parametrize("instances", [None, 1, 4])
def test_instances_none_or_positive(instances: int | None) -> None:
    assert ModelConfig(instances=instances).instances == instances


@pytest.mark.parametrize("timeout_s", [None, 0.001, 1, 2.5, 86_400])
def test_execution_timeout_is_none_or_positive_seconds(timeout_s: float | None) -> None:
    assert ModelConfig(execution_timeout_s=timeout_s).execution_timeout_s == timeout_s


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf"), True, "1"])
def test_execution_timeout_must_be_positive_and_finite(timeout_s: Any) -> None:
    match = "execution_timeout_s must be None (no limit) or a number of seconds > 0, got " + repr(timeout_s)
    with pytest.raises(ConfigurationError) as caught:
        ModelConfig(execution_timeout_s=timeout_s)
    assert caught.value.problems == [match]


@pytest.mark.parametrize("instances", [0, -1, 1.0, "2", True])
def test_instances_must_be_none_or_a_positive_int(instances: Any) -> None:
    match = "instances must be None (run in the binding process) or an int >= 1, got " + repr(instances)
    with pytest.raises(ConfigurationError, match=re.escape(match)):
        ModelConfig(instances=instances)


def test_model_config_reports_every_problem_at_once() -> None:
    problems = problems_of(ModelConfig, batching=1, decoupled="x", max_batch_size=0, batcher=None, instances=0)
    assert problems == [
        "batching must be a bool, got 1",
        "decoupled must be a bool, got 'x'",
        "max_batch_size must be an int >= 1, got 0",
        "batcher must be a DynamicBatcher, got None",
        "instances must be None (run in the binding process) or an int >= 1, got 0",
    ]


def test_model_config_message_names_it() -> None:
    with pytest.raises(
        ConfigurationError, match=r"\AModelConfig is invalid:\n  - max_batch_size must be an int >= 1, got 0\Z"
    ):
        ModelConfig(max_batch_size=0)


def test_model_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().max_batch_size = 3  # type: ignore[misc]
