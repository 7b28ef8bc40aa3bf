"""The request parser alone (``vsr.serve.requests``): pure functions, checked directly and fuzzed with a
bounded number of hypothesis examples. Whatever the bytes, the answer is a valid array or a
``RequestError`` with a 4xx status, never another exception."""
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsr.serve import requests as rq

LIMITS = rq.Limits(max_pixels=64, max_batch=2, max_video_bytes=1000)
FUZZ = settings(max_examples=150, deadline=500, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=40)


def _outcome(fn, *args):
    try:
        out = fn(*args)
    except rq.RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return exc.status
    assert out.ndim == 4 and out.shape[-1] == 3 and out.dtype in (np.uint8, np.float32)
    assert out.shape[0] <= LIMITS.max_batch and out.shape[1] * out.shape[2] <= LIMITS.max_pixels
    return 200


@FUZZ
@given(instances=json_values)
def test_fuzz_json_structures(instances):
    _outcome(rq.parse_json_instances, json.dumps({"instances": instances}, allow_nan=True).encode(), LIMITS)


@FUZZ
@given(body=st.binary(max_size=200))
def test_fuzz_json_bytes(body):
    _outcome(rq.parse_json_instances, body, LIMITS)


@FUZZ
@given(prefix=st.binary(max_size=120), cut=st.integers(0, 400))
def test_fuzz_npy_bytes(prefix, cut):
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 4, 4, 3), np.uint8))
    good = buf.getvalue()
    _outcome(rq.parse_npy_instances, prefix, LIMITS)
    _outcome(rq.parse_npy_instances, good[:cut] + prefix, LIMITS)  # truncated and corrupted real files


@FUZZ
@given(name=st.text(max_size=40))
def test_fuzz_upload_names(name):
    try:
        suffix = rq.upload_suffix(name, rq.VIDEO_CONTAINERS)
    except rq.RequestError as exc:
        assert exc.status == 415 and len(exc.message) < 200 and "\x00" not in exc.message
        return
    assert suffix in rq.VIDEO_CONTAINERS and name.lower().endswith(suffix)


@FUZZ
@given(folder=st.lists(st.text("abc-_.", min_size=1, max_size=6), min_size=1, max_size=4), pid=st.integers(1, 10**6))
def test_fuzz_public_message_cuts_paths(folder, pid):
    path = "/" + "/".join(f"d{p}" for p in folder)
    text = f"{path}/input.mp4: cannot write {path}/.result.vsr-tmp-host-{pid}.mkv (disk full)"
    out = rq.public_message(text)
    assert out == "input.mp4: cannot write result.mkv (disk full)"


def test_parser_accepts_what_it_should():
    frames = np.arange(2 * 4 * 8 * 3).reshape(2, 4, 8, 3) % 256
    out = rq.parse_json_instances(json.dumps({"instances": frames.tolist()}).encode(), LIMITS)
    assert out.dtype == np.uint8 and np.array_equal(out, frames)
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(frames / 255.0))
    out = rq.parse_npy_instances(buf.getvalue(), LIMITS)
    assert out.dtype == np.float32 and np.allclose(out, frames / 255.0)


@pytest.mark.parametrize("shape, status", [((3, 2, 2, 3), 413), ((1, 9, 8, 3), 413), ((1, 2, 2, 4), 422),
                                           ((1, 2, 2), 422), ((0, 2, 2, 3), 422)])
def test_parser_refuses_by_shape(shape, status):
    arr = np.zeros(shape, np.uint8)
    buf = io.BytesIO()
    np.save(buf, arr)
    with pytest.raises(rq.RequestError) as npy:
        rq.parse_npy_instances(buf.getvalue(), LIMITS)
    with pytest.raises(rq.RequestError) as js:
        rq.parse_json_instances(json.dumps({"instances": arr.tolist()}).encode(), LIMITS)
    assert npy.value.status == status and (js.value.status == status or shape[0] == 0)


def test_response_media_and_content_types():
    assert rq.response_media("text/html, application/x-npy;q=0.9") == rq.NPY
    assert rq.response_media(None) == rq.JSON and rq.response_media("*/*") == rq.JSON
    assert rq.media_type("Application/JSON; charset=utf-8") == rq.JSON
