"""The payload format: any nested state round-trips exactly, safetensors readers open it, bad headers are refused."""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

from pccheck import payload
from pccheck.errors import CheckpointError, UserError


def _bytes(enc: payload.Encoded) -> bytearray:
    out = bytearray(enc.header)
    for t in enc.tensors:
        out += t.reshape(-1).view(torch.uint8).numpy().tobytes()
    assert len(out) == enc.nbytes
    return out


def test_round_trip_of_a_real_optimizer_state():
    model = torch.nn.Linear(4, 3).to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), betas=(0.9, 0.95))
    model(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7}
    back = payload.decode(_bytes(payload.encode(state)))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys survive
    for k, v in state["model"].items():
        assert back["model"][k].dtype == torch.bfloat16 and torch.equal(back["model"][k], v)
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).to(torch.bfloat16).parameters())
    fresh.load_state_dict(back["optimizer"])


def test_plain_values_and_special_cases():
    state = {
        "floats": [0.1, float("inf"), -0.0, 1e-300],
        "nan": float("nan"),
        "none": None, "flag": True, "big": 2**100, "text": "ü",
        "tuple": (1, (2, 3)), "dtype": torch.float16, "device": torch.device("cpu"),
        "ndarray": np.arange(5, dtype=np.uint32), "scalar": torch.tensor(3.5),
        "strided": torch.arange(12.0).view(3, 4).t(), "empty": torch.empty(0, 5),
        "__tensor__": "a key that looks like a marker",
    }
    back = payload.decode(_bytes(payload.encode(state)))
    assert repr(back["floats"]) == repr(state["floats"]) and math.isnan(back["nan"])
    assert back["tuple"] == (1, (2, 3)) and back["big"] == 2**100 and back["text"] == "ü"
    assert back["dtype"] is torch.float16 and back["device"] == torch.device("cpu")
    assert back["ndarray"].dtype == np.uint32 and list(back["ndarray"]) == [0, 1, 2, 3, 4]
    assert torch.equal(back["strided"], state["strided"]) and back["empty"].shape == (0, 5)
    assert back["__tensor__"] == state["__tensor__"]


def test_keys_of_every_kind_round_trip_without_pickle(monkeypatch):
    """Non-string keys (ints, tuples, None, floats, bools) are written as JSON, never pickled: the pickle
    module is unusable during the round trip, and the header is plain JSON of the documented markers."""
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used by the payload format")

    import pickle

    for name in ("dumps", "dump", "loads", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    state = {"by_int": {0: torch.ones(2), 7: "x"}, "by_tuple": {(1, "a"): 1.5, (2, (3,)): None},
             "odd": {None: 1, 2.5: 2, True: 3, "s": 4}}
    enc = payload.encode(state)
    back = payload.decode(_bytes(enc))
    assert set(back["by_int"]) == {0, 7} and torch.equal(back["by_int"][0], torch.ones(2))
    assert back["by_tuple"] == state["by_tuple"] and back["odd"] == state["odd"]
    tree = json.loads(json.loads(bytes(enc.header)[8:])["__metadata__"]["pccheck.state"])

    def markers(node) -> set:
        if isinstance(node, list):
            return set().union(*map(markers, node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found = {k for k in node if k.startswith("__") and len(node) == 1}
        return found.union(*map(markers, node.values()))

    assert markers(tree) <= set(payload._MARKERS), markers(tree)


def test_unsupported_value_names_its_path():
    with pytest.raises(UserError, match="opt/fn"):
        payload.encode({"opt": {"fn": object()}})


def test_safetensors_reads_payload_and_tensors_are_aligned():
    state = {"a": torch.ones(3, dtype=torch.bfloat16), "b": torch.arange(5, dtype=torch.float64), "c": torch.ones(1, dtype=torch.uint8)}
    raw = _bytes(payload.encode(state))
    tensors = st_load(bytes(raw))
    assert set(tensors) == {"a", "b", "c"} and torch.equal(tensors["b"], state["b"])
    _, infos = payload.parse_header(raw)
    for info in infos:
        assert info.begin % payload._BY_NAME[info.dtype].itemsize == 0


def _with_header(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01\x02",
        struct.pack("<Q", 2**63) + b"{}",
        struct.pack("<Q", 4) + b"nope",
        _with_header({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
        _with_header({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _with_header({"t": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _with_header({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "u": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        _with_header({"__metadata__": {"format": "pccheck.state.v1", "pccheck.state": "{"}}),
        _with_header({"__metadata__": {"format": "pccheck.state.v1", "pccheck.state": '{"__tensor__": "missing"}'}}),
    ],
)
def test_hostile_payloads_are_refused(blob):
    with pytest.raises(CheckpointError):
        payload.decode(bytearray(blob))


def test_a_changed_layout_is_never_described_by_the_previous_entries():
    """Saving the same model again reuses the header's tensor entries; any change of name, dtype or shape
    must produce new ones."""
    first = {"w": torch.ones(4, 3), "b": torch.zeros(3)}
    states = [first, first, {"w": torch.ones(3, 4), "b": torch.zeros(3)}, {"w": torch.ones(4, 3, dtype=torch.float64),
              "b": torch.zeros(3)}, {"v": torch.ones(4, 3), "b": torch.zeros(3)}, {"w": torch.ones(5, 3), "b": torch.zeros(3)}]
    for state in states:
        enc = payload.encode(state)
        _, infos = payload.parse_header(_bytes(enc))
        assert {i.name: (i.dtype, i.shape) for i in infos} == {
            k: (payload.DTYPES[t.dtype], list(t.shape)) for k, t in state.items()}
        back = payload.decode(_bytes(enc))
        assert all(torch.equal(back[k], t) for k, t in state.items())
