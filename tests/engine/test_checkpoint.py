import pytest
import torch

from mmim.engine import checkpoint as ckpt


def test_atomic_save_ignores_partial_files(tmp_path):
    ckpt.save_atomic({"step": 1, "w": torch.ones(2)}, tmp_path / "ckpt-00000001.pt")
    (tmp_path / "ckpt-00000002.pt.tmp").write_bytes(b"half written")
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt-00000001.pt"
    state = ckpt.load_checkpoint(tmp_path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(2))
    assert not list(tmp_path.glob("ckpt-00000001.pt.tmp"))


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_atomic({"step": step}, tmp_path / f"ckpt-{step:08d}.pt")
    ckpt.prune_checkpoints(tmp_path, 2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]


def test_rng_state_roundtrip_is_weights_only_loadable(tmp_path):
    import random

    import numpy as np

    state = ckpt.rng_state()
    ckpt.save_atomic({"rng": state}, tmp_path / "ckpt-00000001.pt")
    a = (torch.rand(3), random.random(), np.random.rand())
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path)["rng"])
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "ckpt-00000001.pt")
    with pytest.raises(RuntimeError, match="cannot load checkpoint"):
        ckpt.load_checkpoint(tmp_path / "ckpt-00000001.pt")


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)
