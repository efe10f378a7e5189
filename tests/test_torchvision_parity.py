"""Presets equal torchvision's own models: parameters exactly, conv+linear MACs to the unit.

torchvision is a test-only dependency, installed by `.ci/setup.sh` with `--no-deps` into
`<venv>/torchvision-models` (not site-packages): its PyPI wheel is built against the CUDA
torch and its compiled ops fail to load beside the CPU torch 2.13.0 — and, once importable,
they break ptflops' own `import torchvision.ops`. The model files need none of those ops,
so they are imported here under a package stub that skips `torchvision/__init__.py`.
Under CI (CI=true) a missing torchvision fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from objectives.flops import analytic_macs, analytic_params, count_params, hook_macs
from search_spaces import build_model, preset

#: families.md: (params, MMACs at 3x224x224, conv + linear multiply-adds)
REFERENCE = {
    "resnet50": (25_557_032, 4089.2), "resnext50_32x4d": (25_028_904, 4230.5),
    "resnext101_32x8d": (88_791_336, 16414.0), "resnext101_64x4d": (83_455_272, 15460.3),
    "shufflenet_v2_x0_5": (1_366_792, 40.5), "shufflenet_v2_x1_0": (2_278_604, 144.9),
    "shufflenet_v2_x1_5": (3_503_624, 295.8), "shufflenet_v2_x2_0": (7_393_996, 583.3),
}
FAST = ("resnet50", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0")


def torchvision_models() -> Any:
    """`torchvision.models`' resnet and shufflenetv2 modules, without torchvision's ops."""
    if "torchvision.models.resnet" in sys.modules:
        return sys.modules["torchvision.models.resnet"], sys.modules["torchvision.models.shufflenetv2"]
    root = Path(os.environ.get("SHUFFLENAS_TORCHVISION", Path(sys.prefix) / "torchvision-models"))
    if not (root / "torchvision" / "models" / "resnet.py").is_file():
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            msg = f"torchvision is not installed (run .ci/setup.sh; looked in {root} and on sys.path)"
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        root = Path(next(iter(spec.submodule_search_locations))).parent
    for name, sub in (("torchvision", ""), ("torchvision.models", "models")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / "torchvision" / sub)]
        sys.modules[name] = pkg
    from torchvision.models import resnet, shufflenetv2

    return resnet, shufflenetv2


def _theirs(name: str) -> Any:
    resnet, v2 = torchvision_models()
    return getattr(v2 if name.startswith("shufflenet") else resnet, name)(weights=None)


def _check(name: str) -> None:
    ref = _theirs(name)
    ours = preset(name)
    params, mmacs = REFERENCE[name]
    assert count_params(ref) == params  # the figures in families.md are torchvision's
    assert analytic_params(ours) == count_params(build_model(ours)) == params
    macs = hook_macs(ref, (3, 224, 224))
    assert analytic_macs(ours) == macs
    assert round(macs / 1e6, 1) == mmacs


@pytest.mark.parametrize("name", FAST)
def test_preset_equals_torchvision(name: str) -> None:
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in REFERENCE if n not in FAST])
def test_large_preset_equals_torchvision(name: str) -> None:
    _check(name)
