import pickle

import numpy as np
import pytest

from clusterloss.data.safe_pickle import UnsafePickleError, safe_load, safe_loads


def _global_call_pickle(module: str, name: str, argument: str) -> bytes:
    """Hand-assembled protocol-2 pickle: GLOBAL module.name, call it with (argument,) via REDUCE."""
    text = argument.encode()
    return (
        b"\x80\x02c"
        + module.encode()
        + b"\n"
        + name.encode()
        + b"\n"
        + b"X"
        + len(text).to_bytes(4, "little")
        + text
        + b"\x85R."
    )


@pytest.mark.parametrize(
    "module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "getoutput")]
)
def test_global_reduce_raises_without_executing(tmp_path, module, name):
    sentinel = tmp_path / "pwned"
    command = f"touch {sentinel}" if name != "eval" else f"open({str(sentinel)!r}, 'w')"
    payload = _global_call_pickle(module, name, command)
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        safe_loads(payload)
    assert not sentinel.exists()


def test_reduce_class_payload_and_stack_global_are_refused(tmp_path):
    sentinel = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {sentinel}",)

    for protocol in (2, 4, 5):
        payload = pickle.dumps({b"data": Exploit()}, protocol=protocol)
        with pytest.raises(UnsafePickleError, match="system"):
            safe_loads(payload)
    assert not sentinel.exists()


def test_numpy_lookalikes_and_object_arrays_are_refused(official):
    with pytest.raises(UnsafePickleError, match="numpy.load"):
        safe_loads(_global_call_pickle("numpy", "load", "x.npy"))
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(UnsafePickleError, match="numpy.ma"):
        safe_loads(pickle.dumps(np.ma.masked_array([1, 2]), protocol=2))
    # _reconstruct asked to build something other than a plain ndarray
    payload = official.pickle_bytes({b"data": np.zeros(2, np.uint8)}).replace(
        b"numpy\nndarray\n", b"numpy\ndtype\n"
    )
    with pytest.raises(UnsafePickleError, match="only numpy.ndarray"):
        safe_loads(payload)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_and_arrays_round_trip(protocol):
    value = {
        "data": np.arange(24, dtype=np.uint8).reshape(4, 6),
        "labels": [1, 2, 3],
        "mean": np.ones(3),
        b"name": b"batch",
        "nested": ({"x": 1.5, "y": None, "z": True}, [np.float32(2.5)]),
    }
    loaded = safe_loads(pickle.dumps(value, protocol=protocol))
    assert np.array_equal(loaded["data"], value["data"]) and loaded["data"].dtype == np.uint8
    assert loaded["labels"] == [1, 2, 3] and loaded[b"name"] == b"batch"
    assert loaded["nested"][0] == value["nested"][0] and loaded["nested"][1][0] == np.float32(2.5)


def test_both_numpy_module_names_load(official, tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    old_name = official.pickle_bytes({b"data": array})  # numpy.core.multiarray (Python 2 / numpy 1)
    new_name = old_name.replace(b"numpy.core.multiarray", b"numpy._core.multiarray")
    assert b"numpy._core.multiarray" in new_name
    for payload in (old_name, new_name):
        assert np.array_equal(safe_loads(payload)[b"data"], array)
    (tmp_path / "f").write_bytes(old_name)
    assert list(safe_load(tmp_path / "f", encoding="latin1")) == ["data"]
