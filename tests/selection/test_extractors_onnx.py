"""Extractor 'onnx': a tiny torch module exported on the spot gives the module's own output; bad models are named."""
from __future__ import annotations

import numpy as np
import pytest

from selection.extractors import ExtractorError, make_extractor
from tests.modelkit import random_images, tiny_onnx_model

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def _prep(imgs, size, mean=0.5, std=0.5):
    """Independent preprocessing: bilinear resize, [0, 1], (x - mean) / std, NCHW."""
    from PIL import Image

    x = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
                  for im in imgs]) / 255.0
    return ((x - mean) / std).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("dynamic", [True, False])
def test_output_equals_the_torch_module(tmp_path, dynamic):
    net = tiny_onnx_model(tmp_path / "m.onnx", size=8, dynamic_batch=dynamic)
    imgs = random_images(7, seed=1)
    X = make_extractor("onnx", {"path": str(tmp_path / "m.onnx"), "size": 8, "normalize": "centered",
                                "batch": 3}).extract(lambda i: imgs[i], 7)
    with torch.no_grad():
        ref = net(torch.from_numpy(_prep(imgs, 8))).numpy()
    assert X.dtype == np.float32 and X.shape == (7, 6)
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
    again = make_extractor("onnx", {"path": str(tmp_path / "m.onnx"), "size": 8, "normalize": "centered",
                                    "batch": 5, "workers": 0}).extract(lambda i: imgs[i], 7)
    np.testing.assert_allclose(again, X, rtol=1e-6, atol=1e-6)


def _graph_model(tmp_path, nodes, inputs, outputs, initializers=(), domain_opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domain_opsets])
    path = tmp_path / "g.onnx"
    onnx.save_model(model, str(path))
    return path


def test_nhwc_input_is_fed_in_its_layout(tmp_path):
    # (B, 4, 4, 3) -> ReduceMean over H, W -> (B, 3): the per-channel mean of the normalised image.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    path = _graph_model(tmp_path, [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], [x], [y],
                        [axes], domain_opsets=(("", 18),))
    imgs = random_images(3, seed=2)
    X = make_extractor("onnx", {"path": str(path), "size": 4, "normalize": "centered"}).extract(lambda i: imgs[i], 3)
    np.testing.assert_allclose(X, _prep(imgs, 4).mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_inputs_and_outputs_are_checked_with_clear_errors(tmp_path):
    imgs = random_images(1)
    tiny_onnx_model(tmp_path / "m.onnx", size=8, dynamic_batch=False)
    with pytest.raises(ExtractorError, match="expects 8 x 8 images but size=16"):
        make_extractor("onnx", {"path": str(tmp_path / "m.onnx"), "size": 16}).extract(lambda i: imgs[i], 1)
    with pytest.raises(ExtractorError, match=r"has no output 'emb'; its outputs are \['features'\]"):
        make_extractor("onnx", {"path": str(tmp_path / "m.onnx"), "size": 8, "output": "emb"}).extract(
            lambda i: imgs[i], 1)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["b", 3, 4, 4])
    b = helper.make_tensor_value_info("b2", TensorProto.FLOAT, ["b", 3, 4, 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["b", 3, 4, 4])
    two = _graph_model(tmp_path, [helper.make_node("Add", ["a", "b2"], ["s"])], [a, b], [s])
    with pytest.raises(ExtractorError, match="has 2 inputs"):
        make_extractor("onnx", {"path": str(two), "size": 4}).extract(lambda i: imgs[i], 1)
    xi = helper.make_tensor_value_info("x", TensorProto.INT64, ["b", 3, 4, 4])
    yi = helper.make_tensor_value_info("y", TensorProto.INT64, ["b", 3, 4, 4])
    ints = _graph_model(tmp_path, [helper.make_node("Identity", ["x"], ["y"])], [xi], [yi])
    with pytest.raises(ExtractorError, match="takes tensor\\(int64\\); Loupe feeds float images"):
        make_extractor("onnx", {"path": str(ints), "size": 4}).extract(lambda i: imgs[i], 1)
    x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 48])
    flat = _graph_model(tmp_path, [helper.make_node("Identity", ["x"], ["y"])], [x2],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 48])])
    with pytest.raises(ExtractorError, match="rank-2 input"):
        make_extractor("onnx", {"path": str(flat), "size": 4}).extract(lambda i: imgs[i], 1)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 this is not a protobuf at all" * 10)
    with pytest.raises(ExtractorError, match="is not a valid ONNX file|onnxruntime can run"):
        make_extractor("onnx", {"path": str(junk), "size": 4}).extract(lambda i: imgs[i], 1)


def test_external_data_and_custom_operators_are_refused(tmp_path):
    imgs = random_images(1)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(48, dtype=np.float32).tobytes())  # a file on the worker
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, 4, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 4, 4], np.zeros(48, np.float32))
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "secret.bin", "offset": "0", "length": "192"}.items():
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    path = _graph_model(tmp_path, [helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w])
    with pytest.raises(ExtractorError, match="external data files"):
        make_extractor("onnx", {"path": str(path), "size": 4, "normalize": "unit"}).extract(lambda i: imgs[i], 1)
    custom = _graph_model(tmp_path, [helper.make_node("ReadFile", ["x"], ["y"], domain="evil.ops")], [x], [y],
                          domain_opsets=(("", 17), ("evil.ops", 1)))
    with pytest.raises(ExtractorError, match=r"custom domain\(s\) \['evil.ops'\]"):
        make_extractor("onnx", {"path": str(custom), "size": 4}).extract(lambda i: imgs[i], 1)
