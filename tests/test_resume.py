"""A killed pre-training goes on where it stopped and ends with the weights of one that never
stopped, bit for bit: through the shared loop, for every pretrainer that uses it."""

import hashlib
import random
import subprocess
import sys
import time

import pytest
import torch
from test_faults import ddpm_matrix
from test_safe_files import plant

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import CorruptFile
from lmbench.run.schedule import run_matrix
from lmbench.store import tensorfile
from lmbench_plugins.ddpm.backbone import DdpmUNet
from lmbench_plugins.ddpm.pretrainer import DdpmPretrainer
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.ssl.dino import Dino
from lmbench_plugins.ssl.mocov3 import MoCoV3
from lmbench_plugins.ssl.simclrv2 import SimCLRv2

from conftest import lmbench_cli, pretrain_context

SMALL = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8]))
STEPS = 6


class Killed(Exception):
    pass


def train(pretrainer_factory, backbone, images, resume_path=None, kill_at=None):
    """The last checkpoint's weights, or Killed after step ``kill_at`` (its state written)."""
    saved = {}
    context = pretrain_context(images, backbone, saved)
    context.resume_path, context.resume_every = resume_path, 0.0

    def progress(done, total):
        if done == kill_at:
            raise Killed

    context.progress = progress
    torch.manual_seed(123)  # the process's generators, as a fresh run has them
    pretrainer_factory().pretrain(context)
    return saved[STEPS]


SSL = dict(iterations=STEPS, batch_size=4, accumulation=2, hidden_dim=32, output_dim=16)
PRETRAINERS = {
    "ddpm": (lambda: DdpmPretrainer(DdpmPretrainer.Params(iterations=STEPS, batch_size=2, accumulation=2)),
             DdpmUNet(DdpmUNet.Params(preset="smoke"))),
    "mocov3-published": (lambda: MoCoV3(MoCoV3.Params(**SSL)), SMALL),
    "simclrv2-xray": (lambda: SimCLRv2(SimCLRv2.Params(**SSL, recipe="xray")), SMALL),
    "dino-xray": (lambda: Dino(Dino.Params(**SSL, recipe="xray", local_views=2, bottleneck_dim=16)), SMALL),
}


@pytest.mark.parametrize("name", list(PRETRAINERS))
def test_a_pretraining_stopped_at_any_step_resumes_to_the_same_weights(name, tmp_path):
    factory, backbone = PRETRAINERS[name]
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    clean = train(factory, backbone, images)
    state = tmp_path / "resume.safetensors"
    with pytest.raises(Killed):
        train(factory, backbone, images, state, kill_at=3)
    assert len(tensorfile.load(state)[1]["extra"]["losses"]) == 3
    resumed = train(factory, backbone, images, state)
    assert clean.keys() == resumed.keys()
    assert all(torch.equal(clean[k], resumed[k]) for k in clean), name


def weights_hash(cache):
    (weights,) = cache.glob("pretrain/*/checkpoint-20.safetensors")
    return hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(tensorfile.load(weights)[0].items())))


def test_sigkill_at_a_random_step_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    path = ddpm_matrix(tmp_path / "killed", iterations=20, first=20, labels=(1,))
    path.write_text("resume_every = 0\n" + path.read_text())
    state = None
    kill_at = random.Random().randint(3, 16)
    process = subprocess.Popen([sys.executable, "-m", "lmbench", "run", "--matrix", str(path), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, reached = time.time() + 300, 0
    while time.time() < deadline and reached < kill_at:
        states = list((tmp_path / "killed" / "cache" / "pretrain").glob("*/resume.safetensors"))
        if states:
            state = states[0]
            try:
                reached = len(tensorfile.load(state)[1]["extra"]["losses"])
            except CorruptFile:  # replaced while read
                pass
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert state is not None and reached >= kill_at and not list(state.parent.glob("COMPLETE")), "killed mid run"
    resumed_from = len(tensorfile.load(state)[1]["extra"]["losses"])
    out = lmbench_cli("run", "--matrix", str(path), "--quiet")
    assert out.returncode == 0 and "1 ok" in out.stdout, out.stdout + out.stderr
    assert f"ddpm: resuming from iteration {resumed_from} of 20" in out.stderr
    assert not state.exists()  # removed once the pre-training is complete

    clean = load_matrix(ddpm_matrix(tmp_path / "clean", iterations=20, first=20, labels=(1,)))
    run_matrix(clean, quiet=True)
    killed_hash, clean_hash = weights_hash(tmp_path / "killed" / "cache"), weights_hash(tmp_path / "clean" / "cache")
    print(f"killed at iteration >= {kill_at}, resumed from {resumed_from}; weights sha256 "
          f"{killed_hash.hexdigest()[:16]} (resumed) {clean_hash.hexdigest()[:16]} (uninterrupted)")
    assert killed_hash.digest() == clean_hash.digest()


def test_an_unreadable_resume_state_is_never_loaded_and_the_pretraining_starts_again(tmp_path, caplog):
    factory, backbone = PRETRAINERS["ddpm"]
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    state, marker = tmp_path / "resume.safetensors", tmp_path / "ran"
    plant(state, marker)  # a pickle whose unpickling would create ``marker``
    with caplog.at_level("WARNING", logger="lmbench"):
        restarted = train(factory, backbone, images, state)
    assert not marker.exists()
    assert any("resume.safetensors: a torch.save archive (a pickle" in r.getMessage()
               and "starting again" in r.getMessage() for r in caplog.records)
    clean = train(factory, backbone, images)
    assert all(torch.equal(clean[k], restarted[k]) for k in clean)


def test_a_resume_state_of_other_shapes_is_set_aside_and_the_pretraining_starts_again(tmp_path, caplog):
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    state = tmp_path / "resume.safetensors"
    with pytest.raises(Killed):  # a state whose checksum holds, from a network of another width
        train(lambda: MoCoV3(MoCoV3.Params(**SSL)), SMALL, images, state, kill_at=3)
    wider = lambda: MoCoV3(MoCoV3.Params(**{**SSL, "hidden_dim": 48}))  # noqa: E731
    with caplog.at_level("WARNING", logger="lmbench"):
        restarted = train(wider, SMALL, images, state)
    assert any("a state that does not fit this training" in r.getMessage() and "starting again" in r.getMessage()
               for r in caplog.records)
    clean = train(wider, SMALL, images)
    assert all(torch.equal(clean[k], restarted[k]) for k in clean)
