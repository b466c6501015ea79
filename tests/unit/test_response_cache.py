"""The response cache alone: what makes two requests the same key, LRU eviction within the byte bound, copies
that stay put, a model's entries dropped when it is bound again, the lookup's counters, and how the statistics
and the metrics report them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, Tensor
from pybind_serve.front.models import Models
from pybind_serve.front.response_cache import ResponseCache, request_key
from pybind_serve.metrics import Metrics, ModelStats
from pybind_serve.protocol.messages import InferRequest, RequestedOutput
from pybind_serve.spec import ModelSpec

X = np.arange(6, dtype=np.float32).reshape(1, 6)


def request(**changes: Any) -> InferRequest:
    fields: dict[str, Any] = {"model": "m", "version": 1, "inputs": {"x": X, "n": np.array([[3]], np.int64)}}
    fields.update(changes)
    return InferRequest(**fields)


def test_identical_requests_have_the_same_key() -> None:
    assert request_key(request()) == request_key(request())
    copied = {"n": np.array([[3]], np.int64), "x": X.copy()}  # other arrays, other order: same content
    assert request_key(request(inputs=copied)) == request_key(request())
    strided = np.zeros((1, 12), np.float32)
    strided[0, ::2] = X[0]
    assert request_key(request(inputs={"x": strided[:, ::2], "n": np.array([[3]], np.int64)})) == request_key(request())


def test_what_is_not_part_of_the_key() -> None:
    """The scheduler's and the protocol's fields: id, priority, timeout, outputs asked for, binary output."""
    key = request_key(request())
    others = [
        request(id="another"),
        request(priority=2, timeout_us=5_000),
        request(outputs=(RequestedOutput("y", binary=True),)),
        request(binary_output=True),
    ]
    assert all(request_key(r) == key for r in others)


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "other"},
        {"version": 2},
        {"inputs": {"x": X + 1, "n": np.array([[3]], np.int64)}},  # other bytes
        {"inputs": {"x": X.reshape(2, 3), "n": np.array([[3]], np.int64)}},  # same bytes, another shape
        {"inputs": {"x": X.view(np.int32), "n": np.array([[3]], np.int64)}},  # same bytes, another datatype
        {"inputs": {"y": X, "n": np.array([[3]], np.int64)}},  # another name
        {"inputs": {"x": X}},  # an input fewer
        {"parameters": {"tag": "a"}},
        {"parameters": {"tag": 1}},
        {"parameters": {"tag": True}},
        {"parameters": {"tag": 1.0}},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}"[:30] for k, v in c.items()),
)
def test_any_difference_is_another_key(changes: dict[str, Any]) -> None:
    assert request_key(request(**changes)) != request_key(request())


def test_bytes_inputs_are_keyed_by_their_elements() -> None:
    def text(*items: bytes) -> InferRequest:
        return InferRequest("m", 1, {"t": np.array([list(items)], dtype=object)})

    assert request_key(text(b"ab", b"c")) == request_key(text(b"ab", b"c"))
    assert request_key(text(b"ab", b"c")) != request_key(text(b"a", b"bc"))  # length-prefixed: no ambiguity
    assert len({request_key(text(b"")), request_key(text(b"", b"")), request_key(text(b"\x00"))}) == 3


def outputs(fill: float, floats: int = 100) -> dict[str, np.ndarray]:
    return {"y": np.full(floats, fill, np.float32)}


def test_least_recently_used_entries_are_evicted_first() -> None:
    one = len(b"k1") + 256 + 400  # the key, the overhead, the outputs' bytes
    cache = ResponseCache(2 * one + 10)
    model = ("m", 1)
    assert cache.put(b"k1", model, outputs(1)) and cache.put(b"k2", model, outputs(2))
    assert cache.size_bytes == 2 * one
    assert cache.get(b"k1") is not None  # k2 is now the least recently used
    assert cache.put(b"k3", model, outputs(3))
    assert cache.get(b"k2") is None and cache.get(b"k1") is not None and cache.get(b"k3") is not None
    assert len(cache) == 2 and cache.size_bytes <= cache.capacity_bytes


def test_an_entry_bigger_than_the_cache_is_not_stored() -> None:
    cache = ResponseCache(1000)
    assert cache.put(b"small", ("m", 1), outputs(1)) is True
    assert cache.put(b"big", ("m", 1), outputs(1, floats=1000)) is False
    assert cache.get(b"big") is None and cache.get(b"small") is not None  # nothing evicted for it


def test_storing_a_key_again_replaces_it() -> None:
    cache = ResponseCache(10_000)
    cache.put(b"k", ("m", 1), outputs(1))
    size = cache.size_bytes
    cache.put(b"k", ("m", 1), outputs(2))
    assert cache.size_bytes == size and len(cache) == 1 and cache.get(b"k")["y"][0] == 2  # type: ignore[index]


def test_stored_outputs_are_read_only_copies() -> None:
    cache = ResponseCache(10_000)
    source = outputs(1)
    text = np.array([[b"a", b"bc"]], dtype=object)
    cache.put(b"k", ("m", 1), {**source, "t": text})
    source["y"][:] = 9  # the worker reuses its memory once the response is encoded
    stored = cache.get(b"k")
    assert stored is not None and (stored["y"] == 1).all() and stored["t"].tolist() == [[b"a", b"bc"]]
    with pytest.raises(ValueError, match="read-only"):
        stored["y"][0] = 5


def test_bytes_outputs_count_their_elements() -> None:
    cache = ResponseCache(100_000)
    cache.put(b"k", ("m", 1), {"t": np.array([b"x" * 10_000], dtype=object)})
    assert cache.size_bytes > 10_000


def test_dropping_a_model_forgets_only_its_entries() -> None:
    cache = ResponseCache(100_000)
    cache.put(b"a", ("m", 1), outputs(1))
    cache.put(b"b", ("m", 2), outputs(2))
    cache.put(b"c", ("other", 1), outputs(3))
    assert cache.drop_model(("m", 1)) == 1
    assert cache.get(b"a") is None and cache.get(b"b") is not None and cache.get(b"c") is not None
    assert cache.size_bytes == 2 * (1 + 256 + 400)


def test_a_lookup_counts_a_miss_then_stores_what_was_encoded() -> None:
    cache, stats = ResponseCache(100_000), ModelStats()
    encoded: list[dict[str, np.ndarray]] = []

    def respond(out: dict[str, np.ndarray]) -> str:
        encoded.append(out)
        return f"response {out['y'][0]:g}"

    cached, storing = cache.lookup(request(), respond, stats)
    assert cached is None and storing is not respond
    assert (stats.cache_misses, stats.cache_hits, len(cache)) == (1, 0, 0)
    assert storing(outputs(7)) == "response 7"  # the dispatcher calls it with the worker's outputs
    assert len(cache) == 1
    assert stats.last_inference_ms == 0  # a miss: the batch that runs it says when
    hit_ms = time.time() * 1000
    cached, again = cache.lookup(request(id="later"), respond, stats)
    assert cached is not None and again is respond and again(cached) == "response 7"
    assert (stats.cache_misses, stats.cache_hits) == (1, 1)
    assert hit_ms - 1 <= stats.last_inference_ms <= time.time() * 1000 + 1  # a hit is an inference, as in Triton


def test_a_response_that_does_not_encode_is_not_stored() -> None:
    cache, stats = ResponseCache(100_000), ModelStats()

    def respond(out: dict[str, np.ndarray]) -> str:
        raise ValueError("cannot encode")

    _, storing = cache.lookup(request(), respond, stats)
    with pytest.raises(ValueError, match="cannot encode"):
        storing(outputs(1))
    assert len(cache) == 0


def test_models_use_the_cache_only_where_asked_and_drop_entries_of_a_rebound_version() -> None:
    async def main() -> None:
        cache = ResponseCache(100_000)
        models = Models(cache=cache)
        x, y = (Tensor("x", np.float32, (-1,)),), (Tensor("y", np.float32, (-1,)),)
        cached = models.load(ModelSpec("m", 1, x, y, ModelConfig(response_cache=True)))
        plain = models.load(ModelSpec("plain", 1, x, y, ModelConfig()))
        assert cached.cache is cache and plain.cache is None
        cache.put(b"k", ("m", 1), outputs(1))
        cache.put(b"other", ("plain", 1), outputs(1))
        models.load(ModelSpec("m", 1, x, y, ModelConfig(response_cache=True)))  # bound again: another function
        assert cache.get(b"k") is None and cache.get(b"other") is not None
        cache.put(b"k", ("m", 1), outputs(1))
        models.unload("m", 1)
        assert cache.get(b"k") is None
        with pytest.raises(ConfigurationError, match="has no response cache"):  # a front without a cache
            Models().load(ModelSpec("m", 1, x, y, ModelConfig(response_cache=True)))

    asyncio.run(main())


def test_statistics_count_hits_apart_from_executions() -> None:
    stats = ModelStats(success=5, cache_hits=2, cache_misses=3, cache_hit_us=4, cache_miss_us=9, queue_us=7)
    durations = stats.durations()
    assert durations["cache_hit"] == (2, 4_000) and durations["cache_miss"] == (3, 9_000)
    assert durations["success"][0] == 5
    assert durations["queue"] == (3, 7_000) and durations["compute_infer"][0] == 3  # hits are never queued


def test_metrics_render_cache_figures_for_models_that_used_the_cache() -> None:
    metrics = Metrics()
    metrics.model("cached", 1).cache_hits += 3
    metrics.model("cached", 1).cache_misses += 1
    metrics.model("cached", 1).cache_miss_us += 42
    metrics.model("plain", 1).success += 1
    text = metrics.render().decode()
    assert 'nv_cache_num_hits_per_model{model="cached",version="1"} 3' in text
    assert 'nv_cache_num_misses_per_model{model="cached",version="1"} 1' in text
    assert 'nv_cache_hit_duration_per_model{model="cached",version="1"} 0' in text
    assert 'nv_cache_miss_duration_per_model{model="cached",version="1"} 42' in text
    assert 'nv_cache_num_hits_per_model{model="plain"' not in text
    plain = Metrics()
    plain.model("plain", 1).success += 1
    assert "nv_cache" not in plain.render().decode()  # no model looked in a cache: no cache families at all
    # several fronts: the totals add every front's figures
    total = metrics.merged([metrics.snapshot()])
    assert total.model("cached", 1).cache_hits == 6 and total.model("cached", 1).cache_miss_us == 84
