"""pruning_lib.train on a small learnable synthetic CIFAR (each class its own colour, plus noise)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict

import pytest
import torch

from conftest import make_images, write_image_folder
from pruning_lib.course import data as cdata
from pruning_lib.course import training as ptrain
from pruning_lib.course.checkpoints import load_checkpoint, read_checkpoint
from pruning_lib.course.models import get_model


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    """A data folder with a prepared cache: 10 classes x (80 train + 20 test) coloured images."""
    root = tmp_path_factory.mktemp("colour")
    write_image_folder(root / "cifar10", make_images(80, "colour", seed=1), make_images(20, "colour", seed=2))
    cdata.prepare(root)
    return root


@pytest.fixture
def data_dir(colour_data, small_splits):
    return colour_data           # with load_split's dist/val at 5 + 5 per class (80 -> 70 train)


def _cfg(**kw):
    base = dict(arch="resnet20", batch_size=64, lr=0.05, amp=False)
    return ptrain.TrainConfig(**{**base, **kw})


def test_training_learns(data_dir, tmp_path):
    out = tmp_path / "r20.pt"
    r = ptrain.train(_cfg(epochs=3, train_subset=640), out, device="cpu", data_dir=data_dir)
    losses = [h["loss"] for h in r.history]
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert losses[-1] < 0.5 * losses[0], losses
    assert r.test_accuracy >= 70.0                        # chance is 10 %
    assert r.checkpoint == out and out.exists()
    assert not out.with_name(out.name + ".resume.pt").exists()
    model, meta = load_checkpoint(out, arch="resnet20")
    assert meta["test_accuracy"] == r.test_accuracy and meta["train_images"] == 640
    assert meta["data_copy"] == "images" and meta["recipe"]["lr"] == 0.05
    assert len(meta["history"]) == 3
    assert abs(ptrain.evaluate(model, cdata.load_split("test", data_dir)) - r.test_accuracy) <= 1.0


class Interrupted(Exception):
    pass


def _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch):
    """Start training ``cfg`` into ``out`` and stop it right after epoch 1's resume file is written."""
    real = ptrain.train_epochs

    def stop_after_first_epoch(*args, on_epoch_end=None, **kw):
        def cb(epoch, record):
            on_epoch_end(epoch, record)                    # the resume file is written here
            raise Interrupted
        return real(*args, on_epoch_end=cb, **kw)

    monkeypatch.setattr(ptrain, "train_epochs", stop_after_first_epoch)
    with pytest.raises(Interrupted):
        ptrain.train(cfg, out, device="cpu", data_dir=data_dir)
    monkeypatch.setattr(ptrain, "train_epochs", real)
    return out.with_name(out.name + ".resume.pt")


def test_resume_continues_where_it_stopped(data_dir, tmp_path, monkeypatch):
    cfg = _cfg(epochs=2, train_subset=320)
    reference = ptrain.train(cfg, tmp_path / "straight.pt", device="cpu", data_dir=data_dir)

    out = tmp_path / "resumed.pt"
    resume = _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch)
    assert resume.exists() and not out.exists()
    state = torch.load(resume, weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1 and state["config"]["epochs"] == 2

    with pytest.raises(ValueError, match="another configuration"):
        ptrain.train(_cfg(epochs=3, train_subset=320), out, device="cpu", data_dir=data_dir)

    r = ptrain.train(cfg, out, device="cpu", data_dir=data_dir)
    assert [h["epoch"] for h in r.history] == [1, 2] and not resume.exists()
    # Model, optimiser, schedule and data order were all restored: same result as without a break.
    assert [h["loss"] for h in r.history] == pytest.approx([h["loss"] for h in reference.history], rel=1e-5)
    a, _ = load_checkpoint(out)
    b, _ = load_checkpoint(reference.checkpoint)
    for k, v in a.state_dict().items():
        assert torch.allclose(v.float(), b.state_dict()[k].float(), atol=1e-5), k


def test_big_network_resume_file_is_float16(data_dir, tmp_path, monkeypatch):
    """Above HALF_ABOVE_PARAMS the resume file holds weights and momentum in float16 (half the
    size) and a resumed run casts them back to float32 and finishes close to an unbroken one."""
    cfg = _cfg(epochs=2, train_subset=320)
    full = _interrupt_after_first_epoch(cfg, tmp_path / "full.pt", data_dir, monkeypatch)
    monkeypatch.setattr(ptrain, "HALF_ABOVE_PARAMS", 0)          # treat the ResNet-20 as big
    reference = ptrain.train(cfg, tmp_path / "straight.pt", device="cpu", data_dir=data_dir)
    out = tmp_path / "half.pt"
    resume = _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch)
    state = torch.load(resume, weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    momenta = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert momenta and all(v.dtype == torch.float16 for v in momenta)
    assert resume.stat().st_size < 0.6 * full.stat().st_size

    r = ptrain.train(cfg, out, device="cpu", data_dir=data_dir)
    assert [h["epoch"] for h in r.history] == [1, 2] and not resume.exists()
    assert r.history[1]["loss"] == pytest.approx(reference.history[1]["loss"], rel=0.02)
    model, _ = load_checkpoint(out)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.load(out, weights_only=True)["half"] is True


def test_evaluate(data_dir):
    test = cdata.load_split("test", data_dir)
    model = get_model("resnet20")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    acc = ptrain.evaluate(model, test, batch_size=64)
    assert model.training                                                  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # eval mode: no BN update
    model.eval()
    assert ptrain.evaluate(model, test, batch_size=200) == acc and not model.training
    with torch.no_grad():
        pred = model(cdata.normalize(test.x)).argmax(1)
    assert 0.0 <= acc <= 100.0
    assert acc == pytest.approx(100.0 * (pred == test.y).float().mean().item())


def test_fine_tune_leaves_the_input_alone(data_dir):
    split = cdata.load_split("train", data_dir).subset(320)
    model = get_model("resnet20").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = ptrain.fine_tune(model, epochs=1, lr=0.05, batch_size=64, split=split, device="cpu", amp=False)
    assert tuned is not model and not tuned.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not torch.equal(tuned.state_dict()["conv1.weight"].contiguous(), before["conv1.weight"])
    same = ptrain.fine_tune(model, epochs=1, lr=0.05, batch_size=64, split=split, device="cpu",
                            amp=False, inplace=True)
    assert same is model and not torch.equal(model.state_dict()["conv1.weight"], before["conv1.weight"])


def test_retrain_command_round_trips_through_the_cli():
    import shlex
    from dataclasses import asdict
    for cfg in (ptrain.TrainConfig(),
                ptrain.TrainConfig(arch="resnet56", epochs=68, batch_size=256, lr=0.3, cutout=16),
                ptrain.TrainConfig(arch="cifar_resnet50", lr=0.05, seed=3, train_subset=640, amp=False),
                ptrain.recipe_config("paper", epochs=2, augment=False)):
        for recipe in (cfg, asdict(cfg)):                     # a TrainConfig or a checkpoint's meta["recipe"]
            cmd = ptrain.retrain_command(recipe, "data/checkpoints/x.pt")
            argv = shlex.split(cmd)
            assert argv[:3] == ["python", "-m", "pruning_lib.train"]
            a = ptrain._parser().parse_args(argv[3:])
            assert ptrain.config_from_args(a) == cfg and a.out == "data/checkpoints/x.pt"
    old = asdict(ptrain.TrainConfig(arch="resnet20", epochs=80))
    del old["cutout"]                                          # recipes written before Cutout existed
    assert "--cutout" not in ptrain.retrain_command(old, "r20.pt")
    with pytest.raises(ValueError, match="momentum"):
        ptrain.retrain_command(ptrain.TrainConfig(momentum=0.8), "x.pt")
    with pytest.raises(ValueError, match="mixup"):
        ptrain.retrain_command({**old, "mixup": 0.2}, "x.pt")


def test_compiled_training_saves_plain_weights(data_dir, tmp_path):
    """Training through torch.compile (here its ``aot_eager`` backend: traced forward and backward,
    no C++ compiler needed) saves the model's own keys (no ``_orig_mod.`` prefix), loads with the
    normal loader and records the switch per epoch."""
    r = ptrain.train(_cfg(epochs=1, train_subset=320), tmp_path / "c.pt", device="cpu",
                     data_dir=data_dir, compile="aot_eager")
    state = torch.load(r.checkpoint, weights_only=True)["state_dict"]
    assert set(state) == set(get_model("resnet20").state_dict())
    model, meta = load_checkpoint(r.checkpoint, arch="resnet20")
    assert [h["compiled"] for h in meta["history"]] == [True]
    assert abs(ptrain.evaluate(model, cdata.load_split("test", data_dir)) - r.test_accuracy) <= 1.0


def test_hardware_summary_names_each_machine_with_its_epochs():
    cpu, gpu = "CPU x86_64, 2 threads", "NVIDIA H200"
    same = [{"epoch": e, "hardware": cpu} for e in (1, 2, 3)]
    assert ptrain.hardware_summary(same, cpu) == cpu
    mixed = ([{"epoch": e, "hardware": cpu} for e in range(1, 84)] + [{"epoch": e, "hardware": gpu} for e in range(84, 95)]
             + [{"epoch": e, "hardware": cpu} for e in range(95, 181)])
    assert ptrain.hardware_summary(mixed, cpu) == f"{cpu} (epochs 1-83, 95-180); {gpu} (epochs 84-94)"
    old = [{"epoch": 1}, {"epoch": 2, "hardware": cpu}]          # a resume file from before machines were recorded
    assert ptrain.hardware_summary(old, cpu) == f"machine not recorded (epoch 1); {cpu} (epoch 2)"


def test_a_run_resumed_on_another_machine_records_both(data_dir, tmp_path, monkeypatch):
    """Each epoch records the machine it ran on, so a run continued elsewhere (say, from a CPU to a
    GPU) says so in its checkpoint's metadata instead of naming only the last machine."""
    cfg = _cfg(epochs=2, train_subset=320)
    out = tmp_path / "moved.pt"
    resume = _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch)
    state = torch.load(resume, weights_only=True)
    here = ptrain.hardware(torch.device("cpu"))
    assert state["history"][0]["hardware"] == here
    state["history"][0]["hardware"] = "NVIDIA H200"              # as if epoch 1 had run on a GPU machine
    torch.save(state, resume)
    ptrain.train(cfg, out, device="cpu", data_dir=data_dir)
    meta = read_checkpoint(out)["meta"]
    assert meta["hardware"] == f"NVIDIA H200 (epoch 1); {here} (epoch 2)"
    assert [h["hardware"] for h in meta["history"]] == ["NVIDIA H200", here]


def test_paper_recipe_is_dfpcs_appendix():
    """``--recipe paper``: SGD (no Nesterov), lr 0.1, momentum 0.9, weight decay 5e-4 on every
    parameter (BatchNorm included), cosine over 200 epochs, batch 128, no smoothing, no Cutout."""
    cfg = ptrain.recipe_config("paper")
    assert (cfg.name, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == \
        ("paper", 200, 128, 0.1, 0.9, 5e-4)
    assert (cfg.label_smoothing, cfg.cutout, cfg.schedule, cfg.nesterov, cfg.decay_norm) == \
        (0.0, 0, "cosine", False, True)
    model = get_model("resnet20")
    opt, sched = ptrain._make_optimizer(model, cfg, steps_per_epoch=10)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))   # BN weights decayed too
    assert not opt.param_groups[0]["nesterov"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 2000
    course_opt, course_sched = ptrain._make_optimizer(model, ptrain.recipe_config("course"), 10)
    no_decay = course_opt.param_groups[1]
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert isinstance(course_sched, torch.optim.lr_scheduler.OneCycleLR)


def test_a_changed_preset_says_so_in_its_name():
    assert ptrain.recipe_config("paper", lr=0.05, epochs=2).name == "paper, modified: epochs, lr"
    assert ptrain.recipe_config("paper", arch="resnet56", seed=3).name == "paper"     # the run's own fields
    assert ptrain.recipe_config("course", epochs=180, cutout=16).name == "course"  # the course varies these
    with pytest.raises(ValueError, match="unknown recipe 'papers'"):
        ptrain.recipe_config("papers")
    a = ptrain._parser().parse_args(["--recipe", "paper", "--out", "x.pt"])
    assert ptrain.config_from_args(a) == ptrain.recipe_config("paper")
    cmd = ptrain.retrain_command(ptrain.recipe_config("paper", epochs=2), "x.pt")
    assert cmd.startswith("python -m pruning_lib.train --recipe paper ") and "--epochs 2" in cmd
    a = ptrain._parser().parse_args(["--no-augment", "--out", "x.pt"])
    assert ptrain.config_from_args(a).name == "course, modified: augment"
    with pytest.raises(ValueError, match="cutout=16 asks for augmentation"):
        ptrain.TrainConfig(cutout=16, augment=False).validate()


def test_the_recipe_is_recorded_in_the_checkpoint(data_dir, tmp_path):
    cfg = ptrain.recipe_config("paper", epochs=1, batch_size=64, train_subset=320, amp=False)
    r = ptrain.train(cfg, tmp_path / "p.pt", device="cpu", data_dir=data_dir)
    meta = read_checkpoint(r.checkpoint)["meta"]
    assert meta["recipe"]["name"] == "paper, modified: epochs, batch_size"
    assert meta["recipe"]["schedule"] == "cosine" and meta["recipe"]["decay_norm"] is True


@pytest.mark.parametrize("kw, message", [
    (dict(train_subset=0), "train_subset=0"), (dict(train_subset=-10), "train_subset=-10"),
    (dict(lr=0.0), "lr=0.0"), (dict(lr=float("nan")), "lr=nan"), (dict(cutout=40), "cutout=40"),
    (dict(epochs=0), "epochs=0"), (dict(batch_size=0), "batch_size=0"), (dict(schedule="step"), "schedule"),
    (dict(epochs=1, train_subset=260, batch_size=64), "one-cycle schedule of 4 steps"),
])
def test_bad_settings_are_refused_before_the_data_is_loaded(kw, message, tmp_path, monkeypatch, data_dir):
    loads = []
    real = cdata.load_split
    monkeypatch.setattr(cdata, "load_split", lambda *a, **k: loads.append(a) or real(*a, **k))
    with pytest.raises(ValueError, match=message):
        ptrain.train(_cfg(**kw), tmp_path / "x.pt", device="cpu", data_dir=data_dir)
    if "one-cycle" not in message:            # the schedule's length is known once the split is counted
        assert loads == []
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.resume.pt").exists()


def test_the_command_line_refuses_bad_settings_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        ptrain.main(["--train-subset", "0", "--out", "x.pt"])
    assert e.value.code == 2 and "train_subset=0" in capsys.readouterr().err


def test_a_finished_checkpoint_is_not_silently_retrained(data_dir, tmp_path):
    out = tmp_path / "done.pt"
    ptrain.train(_cfg(epochs=1, train_subset=320), out, device="cpu", data_dir=data_dir)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        ptrain.train(_cfg(epochs=1, train_subset=320), out, device="cpu", data_dir=data_dir)
    assert out.read_bytes() == before
    ptrain.train(_cfg(epochs=1, train_subset=320), out, device="cpu", data_dir=data_dir, overwrite=True)


def test_a_resumed_run_refuses_other_training_images(data_dir, tmp_path, tmp_path_factory, monkeypatch):
    cfg = _cfg(epochs=2, train_subset=320)
    out = tmp_path / "r.pt"
    resume = _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch)
    other = tmp_path_factory.mktemp("other")
    write_image_folder(other / "cifar10", make_images(80, "colour", seed=7), make_images(20, "colour", seed=8))
    cdata.prepare(other)
    with pytest.raises(ValueError, match="other images"):
        ptrain.train(cfg, out, device="cpu", data_dir=other)
    assert resume.exists()
    ptrain.train(cfg, out, device="cpu", data_dir=data_dir)     # the data it started on: resumes
    assert not resume.exists()


def test_a_time_budget_stops_resumably(data_dir, tmp_path):
    """``budget_s``: the run stops after the epoch past which another would not fit, keeps its
    resume file, reports itself unfinished, and the same call continues to the end."""
    cfg = _cfg(epochs=2, train_subset=320)
    out = tmp_path / "b.pt"
    r = ptrain.train(cfg, out, device="cpu", data_dir=data_dir, budget_s=0.0)
    assert not r.finished and r.test_accuracy is None and r.epochs == 1
    assert r.checkpoint == out.with_name("b.pt.resume.pt") and r.checkpoint.exists() and not out.exists()
    done = ptrain.train(cfg, out, device="cpu", data_dir=data_dir, budget_s=3600, shard_mb=1)
    assert done.finished and [h["epoch"] for h in done.history] == [1, 2]
    assert list(tmp_path.glob("b.pt.shard-*")) and load_checkpoint(out)[1]["epochs"] == 2


def test_a_resume_file_from_before_the_augment_switch_continues(data_dir, tmp_path, monkeypatch):
    """Resume files written before ``augment`` existed (the paper-recipe ResNet-20's, say) have no
    such key in their config: they trained with augmentation, the default, and resume as such; the
    single-process run records one process in its epochs and its metadata."""
    cfg = _cfg(epochs=2, train_subset=320)
    out = tmp_path / "old.pt"
    resume = _interrupt_after_first_epoch(cfg, out, data_dir, monkeypatch)
    state = torch.load(resume, weights_only=True)
    del state["config"]["augment"]
    for h in state["history"]:
        del h["world_size"]
    torch.save(state, resume)
    assert ptrain.saved_config(state["config"]) == asdict(cfg)
    r = ptrain.train(cfg, out, device="cpu", data_dir=data_dir)
    assert r.finished and [h.get("world_size") for h in r.history] == [None, 1]
    meta = read_checkpoint(out)["meta"]
    assert meta["world_size"] == 1 and meta["distributed"]["global_batch"] == 64
    with pytest.raises(ValueError, match="another configuration"):     # a run without augmentation is another run
        resume = _interrupt_after_first_epoch(cfg, tmp_path / "aug.pt", data_dir, monkeypatch)
        ptrain.train(dataclasses.replace(cfg, augment=False), tmp_path / "aug.pt", device="cpu", data_dir=data_dir)
