"""The FPS Triton kernels run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).

This checks the kernels' own logic (the two-candidate step above all) against the torch
reference without a GPU, on many small problems full of exact ties. It needs Triton
installed (``pip install triton``; the CPU CI does not install it) and runs in a subprocess,
because the interpreter is chosen when Triton is first imported. On a GPU machine the
``gpu`` tests of ``test_fps_kernel.py`` check the compiled kernels as well.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import torch
    from halfv.ops.fps_kernel import greedy_on_gram_torch, greedy_on_gram_triton

    checked = 0
    for case in range(40):
        gen = torch.Generator().manual_seed(case)
        b = 1 + case % 3
        n = int(torch.randint(2, 90, (1,), generator=gen))
        k = int(torch.randint(1, n + 1, (1,), generator=gen))
        n_seeds = int(torch.randint(0, k + 1, (1,), generator=gen)) if case % 2 else 0
        levels = (0, 2, 4, 16)[case % 4]  # > 0: similarities rounded, many exact ties
        feats = torch.randn(b, n, 8, generator=gen)
        if case % 5 == 0:
            feats = feats * torch.rand(b, n, 1, generator=gen).add(0.5)
            gram, scale = feats @ feats.transpose(1, 2), feats.norm(dim=-1).reciprocal()
        else:
            unit = torch.nn.functional.normalize(feats, dim=-1)
            gram, scale = unit @ unit.transpose(1, 2), None
            if levels:
                gram = (gram * levels).round() / levels
        out = torch.zeros((b, k), dtype=torch.long)
        dist = torch.full((b, n), 2.0)
        if n_seeds:
            seeds = torch.stack([torch.randperm(n, generator=gen)[:n_seeds] for _ in range(b)])
            out[:, :n_seeds] = seeds
            sims = torch.gather(gram, 1, seeds.unsqueeze(-1).expand(-1, -1, n))
            if scale is not None:
                sims = sims * torch.gather(scale, 1, seeds).unsqueeze(-1) * scale.unsqueeze(1)
            dist = (1.0 - sims.amax(1)).scatter(1, seeds, float("-inf"))
        expected = greedy_on_gram_torch(gram, dist.clone(), out.clone(), n_seeds, scale)
        for speculate in (True, False):
            got = greedy_on_gram_triton(
                gram, dist.clone(), out.clone(), n_seeds, scale, num_warps=1, speculate=speculate
            )
            assert torch.equal(got, expected), (case, speculate, got, expected)
            checked += 1
    print("checked", checked)
    """
)


def _interpreter_skip_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "needs Triton (pip install triton)"
    import numpy as np

    major, minor = (int(part) for part in np.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):
        # the interpreter turns one-element arrays into ints with int(), which numpy 2.4
        # refuses; seen with Triton 3.5
        return f"Triton's interpreter needs numpy < 2.4, found {np.__version__}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_interpreter_skip_reason() is not None, reason=str(_interpreter_skip_reason()))
def test_kernels_match_the_reference_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked 80" in done.stdout
