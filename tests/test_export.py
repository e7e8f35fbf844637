"""BatchNorm folding, ONNX export and bundles for every model family (hybrenet_jax.export).

Variables are random with non-trivial BatchNorm parameters and statistics (random scale,
bias, mean and variance), so folding changes every weight.
"""

from __future__ import annotations

import functools
import json
import zipfile

import numpy as np
import pytest
from onnx import helper, shape_inference

from hybrenet_jax.architecture import BatchNorm, expand
from hybrenet_jax.cost import estimate
from hybrenet_jax.counts import count
from hybrenet_jax.export import (BundleError, VariablesMismatchError, apply_folded, build_onnx,
                                 fold, load_bundle, relu_scalars, run_onnxruntime, save_bundle,
                                 validate_variables)
from hybrenet_jax.export.folding import Affine, FoldedConv, PassPart
from hybrenet_jax.variables import expected_shapes, flatten, unflatten
from hybrenet_jax.export.verify import TOLERANCE, jax_logits
from hybrenet_jax.model_string import spec_from_model_string

MODELS = [
    "resnet18:m=8",
    "resnet34:m=8",
    "resnet20:m=8",
    "wrn16x2",
    "wrn16x2:cull=S1,thin=S2+S3",
    "vgg16:m=8",
    "vgg16:m=8,cull=S1,thin=S3,reuse=4",
    "hrn-2x5x3x:m=8",
    "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4",
    "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=2",
    "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=4",
    "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=8",
    "resnet18:m=8,reuse=4",
    "resnet18:m=8,reuse=8,reuse_split=equal,reuse_link=off,reuse_layers=alternate",
    "regnetx-200mf:m=8,depths=1-1-1-1,cull=S1,thin=S4",
]


def random_variables(spec, seed: int = 0) -> dict:
    """Random Flax variables of ``spec``'s model: lecun-normal kernels, random BN everything."""
    rng = np.random.default_rng(seed)
    flat = {}
    for key, (shape, dtype) in expected_shapes(spec).items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            value = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
        elif leaf == "scale":
            value = rng.uniform(0.6, 1.4, shape)
        elif leaf in ("bias", "mean"):
            value = rng.normal(0.0, 0.2, shape)
        elif leaf == "var":
            value = rng.uniform(0.5, 2.0, shape)
        else:
            raise AssertionError(f"unexpected variable {key}")
        flat[key] = value.astype(dtype)
    return unflatten(flat)


@functools.cache
def case(model: str):
    """(spec, variables, inputs, JAX reference logits) of one model string, computed once."""
    spec = spec_from_model_string(model, "cifar10")
    variables = random_variables(spec, seed=len(model))
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3), dtype=np.float32)
    return spec, variables, x, jax_logits(spec, variables, x)


@pytest.mark.parametrize("model", MODELS)
def test_folded_graph_matches_flax_model(model):
    spec, variables, x, ref = case(model)
    folded = fold(spec, variables)
    assert np.max(np.abs(ref)) > 0.1  # logits are not trivially zero
    np.testing.assert_allclose(apply_folded(folded, x), ref, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("model", MODELS)
def test_onnx_matches_flax_model_and_counts_relus(model):
    spec, variables, x, ref = case(model)
    batch = 1 + MODELS.index(model) % 2
    proto = build_onnx(fold(spec, variables), batch=batch)
    diff = np.max(np.abs(run_onnxruntime(proto, x) - ref))
    assert diff <= TOLERANCE, f"{model}: max abs diff {diff}"
    assert relu_scalars(proto) == count(spec).relus
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops
    assert proto.opset_import[0].version >= 13
    kept = [s for s in expand(spec).relu_sites() if s.kept]
    assert sum(n.op_type == "Relu" for n in proto.graph.node) == len(kept)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == \
        [batch, 3, 32, 32]


def test_relu_outputs_under_reuse_are_the_relu_group():
    model = "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=4"
    spec, variables, _, _ = case(model)
    proto = shape_inference.infer_shapes(build_onnx(fold(spec, variables)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in proto.graph.value_info}
    relu_channels = {n.name: shapes[n.output[0]][1] for n in proto.graph.node
                     if n.op_type == "Relu"}
    for site in expand(spec).relu_sites():
        if site.kept:
            assert relu_channels[site.name] == site.channels // 4


def test_fold_absorbs_bn_into_convs_and_keeps_unfoldable_bn_as_affine():
    for model in ("resnet18:m=8", "wrn16x2", "resnet18:m=8,reuse=4"):
        spec, variables, _, _ = case(model)
        arch = expand(spec)
        bns = [l.name for l in arch.layers() if isinstance(l, BatchNorm)]
        folded = list(fold(spec, variables).layers())
        absorbed = [l.bn for l in folded if isinstance(l, FoldedConv) and l.bn]
        affine = [l.name for l in folded if isinstance(l, Affine)]
        assert sorted(absorbed + affine) == sorted(bns)
        if spec.family == "wrn":
            assert sorted(affine) == sorted(n for n in bns if n.endswith("_bn1") or
                                            n == "final_bn")
        else:
            assert affine == []
    # A reuse conv with an unchanged shape passes its reuse group on: BN stays as an affine.
    spec, variables, _, _ = case("resnet18:m=8,reuse=4")
    passes = [p for l in fold(spec, variables).layers() if isinstance(l, FoldedConv)
              for p in l.parts if isinstance(p, PassPart)]
    identity_convs = [c for c in expand(spec).convs()
                      if c.reuse > 1 and not c.reuse_needs_projection]
    assert passes and len(passes) == len(identity_convs)
    assert all(p.scale is not None for p in passes)


def test_folded_conv_kernel_scales_per_output_channel():
    spec, variables, _, _ = case("resnet20:m=8")
    stem = next(l for l in fold(spec, variables).layers() if l.name == "stem_conv")
    kernel = variables["params"]["stem_conv"]["kernel"].astype(np.float64)
    ratio = stem.parts[0].kernel / kernel
    gamma = variables["params"]["stem_bn"]["scale"]
    var = variables["batch_stats"]["stem_bn"]["var"]
    np.testing.assert_allclose(ratio, np.broadcast_to(gamma / np.sqrt(var + 1e-5), ratio.shape),
                               rtol=1e-5)
    bias = variables["params"]["stem_bn"]["bias"] - \
        variables["batch_stats"]["stem_bn"]["mean"] * gamma / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(stem.parts[0].bias, bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_bundle_round_trips_bit_exactly(model, tmp_path):
    spec, variables, x, ref = case(model)
    path = tmp_path / ("bundle.zip" if MODELS.index(model) % 2 else "bundle")
    save_bundle(path, spec, variables, "cifar10", {"note": "test"})
    bundle = load_bundle(path)
    assert bundle.spec == spec
    original, loaded = flatten(variables), flatten(bundle.variables)
    assert sorted(original) == sorted(loaded)
    for key in original:
        assert loaded[key].dtype == original[key].dtype
        assert np.array_equal(loaded[key], original[key]), key
    np.testing.assert_array_equal(jax_logits(bundle.spec, bundle.variables, x), ref)
    fresh = fold(spec, variables).tensors()
    assert sorted(fresh) == sorted(bundle.folded)
    assert all(np.array_equal(fresh[k], bundle.folded[k]) for k in fresh)


def test_bundle_description_contents(tmp_path):
    model = "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=4"
    spec, variables, _, _ = case(model)
    path = save_bundle(tmp_path / "b.zip", spec, variables, "cifar10", {"step": 7})
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["folded.safetensors", "model.json",
                                              "variables.safetensors"]
        d = json.loads(archive.read("model.json"))
    assert d["model"] == model and d["dataset"] == "cifar10" and d["family"] == "resnet"
    assert d["widths"] == list(spec.widths) and d["depths"] == list(spec.depths)
    assert d["counts"] == count(spec).as_dict()
    assert d["cost"] == json.loads(json.dumps(estimate(spec, dataset="cifar10").as_dict()))
    assert d["source"] == {"step": 7}
    layout = {r["name"]: r for r in d["relu_layout"]}
    assert layout["stem_relu"]["state"] == "culled"
    assert layout["stage2_block1_relu1"]["state"] == "kept"
    assert layout["stage2_block1_relu1"]["reuse"] == 4
    assert layout["stage2_block1_relu2"]["state"] == "thinned"
    assert sum(r["relus"] for r in d["relu_layout"]) == count(spec).relus
    # identical inputs give an identical archive
    again = save_bundle(tmp_path / "c.zip", spec, variables, "cifar10", {"step": 7})
    assert again.read_bytes() == path.read_bytes()


def _rewrite_json(path, change):
    d = json.loads((path / "model.json").read_text())
    change(d)
    (path / "model.json").write_text(json.dumps(d))


def test_bundle_loading_rejects_mismatches(tmp_path):
    spec, variables, _, _ = case("resnet20:m=8")
    path = save_bundle(tmp_path / "b", spec, variables, "cifar10")

    _rewrite_json(path, lambda d: d["spec"].update(widths=[16, 32, 64]))
    with pytest.raises(BundleError, match="relu_layout"):
        load_bundle(path)

    def wider(d):  # a consistent description of another network: weights no longer fit
        d["spec"].update(widths=[16, 32, 64], stem_width=16)
        d["relu_layout"] = [{**r, "channels": r["channels"] * 2} for r in d["relu_layout"]]
        for r in d["relu_layout"]:
            r["relus"] = r["channels"] * r["hw"] ** 2
    save_bundle(path, spec, variables, "cifar10")
    _rewrite_json(path, wider)
    with pytest.raises(VariablesMismatchError, match="wrong shape"):
        load_bundle(path)

    save_bundle(path, spec, variables, "cifar10")
    _rewrite_json(path, lambda d: d.update(version=99))
    with pytest.raises(BundleError, match="version"):
        load_bundle(path)

    save_bundle(path, spec, variables, "cifar10")
    (path / "folded.safetensors").unlink()
    with pytest.raises(BundleError, match="lacks folded.safetensors"):
        load_bundle(path)

    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="neither"):
        load_bundle(tmp_path / "junk.zip")


def test_validate_variables_names_missing_and_wrong_entries(tmp_path):
    spec, variables, _, _ = case("resnet20:m=8")
    assert flatten(validate_variables(spec, variables, "x")).keys() == flatten(variables).keys()
    broken = unflatten({k: v for k, v in flatten(variables).items() if "head_fc" not in k})
    with pytest.raises(VariablesMismatchError, match=r"2 missing .*params/head_fc/bias"):
        validate_variables(spec, broken, "test")
    float64 = unflatten({k: v.astype(np.float64) if k.endswith("stem_conv/kernel") else v
                         for k, v in flatten(variables).items()})
    with pytest.raises(VariablesMismatchError, match="stem_conv/kernel.*float64"):
        validate_variables(spec, float64, "test")
    other = spec_from_model_string("resnet20:m=16", "cifar10")
    with pytest.raises(VariablesMismatchError, match="resnet20:m=16"):
        save_bundle(tmp_path / "never-written", other, variables, "cifar10")
    assert not (tmp_path / "never-written").exists()


def test_onnx_model_is_checked_and_named():
    spec, variables, _, _ = case("wrn16x2")
    proto = build_onnx(fold(spec, variables), metadata={"dataset": "cifar10"})
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {"layout": "NCHW", "dataset": "cifar10"}
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.ir_version == helper.find_min_ir_version_for(list(proto.opset_import))
    names = [n.name for n in proto.graph.node]
    assert len(names) == len(set(names))
    assert "stage2_block1_conv1" in names and "final_bn" in names
