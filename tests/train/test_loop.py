import csv
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from rnnpool.train import TrainConfig, fit, load_checkpoint
from rnnpool.train.schedule import cosine_lr

from ._tiny import NoisyDataset, TinyNet, ce_loss


def _cfg(tmp_path, **kw):
    base = dict(epochs=2, batch_size=8, lr=0.1, out_dir=str(tmp_path), progress=False,
                metric="train_loss", metric_mode="min", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(tmp_path, workers):
    # Uninterrupted: 2 epochs.
    torch.manual_seed(0)
    straight = TinyNet()
    fit(straight, NoisyDataset(), ce_loss, _cfg(tmp_path / "a", workers=workers))

    # Interrupted: the same 2-epoch run stopped after the epoch-1 checkpoint, then resumed from
    # a different process state (scrambled global RNG, freshly built model).
    torch.manual_seed(0)
    part = TinyNet()
    c_dir = tmp_path / "c"
    _train_one_epoch_of_two(part, c_dir, workers)
    torch.manual_seed(12345)  # scramble the global RNG: resume must restore it
    torch.randn(100)
    resumed = TinyNet(dropout=0.2)
    out = fit(resumed, NoisyDataset(), ce_loss, _cfg(c_dir, workers=workers, resume=True))
    assert len(out["history"]) == 2
    a, c = _state(straight), _state(resumed)
    assert a.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], c[k]), k
    # and the metrics of epoch 2 are identical too
    assert out["history"][1]["train_loss"] == load_checkpoint(tmp_path / "a" / "last.pt")[
        "history"][1]["train_loss"]


def _train_one_epoch_of_two(model, out_dir, workers):
    """Run epoch 1 of a 2-epoch run, then stop (as a crash after the epoch-1 checkpoint)."""

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def evaluate(m, device):
        calls["n"] += 1
        if calls["n"] == 2:  # end of epoch 2, before its checkpoint is written
            raise Stop
        return {}

    with pytest.raises(Stop):
        fit(model, NoisyDataset(), ce_loss, _cfg(out_dir, workers=workers), evaluate=evaluate)
    assert load_checkpoint(out_dir / "last.pt")["epoch"] == 1


def test_lr_schedule_and_csv(tmp_path):
    cfg = _cfg(tmp_path, epochs=4, max_steps_per_epoch=2, warmup_epochs=1, lr=0.2, min_lr=0.02)
    out = fit(TinyNet(), NoisyDataset(), ce_loss, cfg)
    # steps 0..7, warm-up 2 steps; the row's lr is the lr of the epoch's last step.
    total, warm = 8, 2
    expected = []
    for last_step in (1, 3, 5, 7):
        if last_step < warm:
            expected.append(0.2 * (last_step + 1) / warm)
        else:
            p = (last_step - warm) / (total - warm)
            expected.append(0.02 + 0.18 * (1 + math.cos(math.pi * p)) / 2)
    assert [r["lr"] for r in out["history"]] == pytest.approx(expected, rel=1e-12)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "train_acc", "lr", "train_images_per_s"} <= set(rows[0])
    assert float(rows[2]["train_loss"]) == pytest.approx(out["history"][2]["train_loss"])
    assert all(int(r["step"]) == 2 * (i + 1) for i, r in enumerate(rows))


def test_cosine_lr_hand_values():
    assert cosine_lr(0, 10, 1.0) == 1.0
    assert cosine_lr(5, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(10, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine_lr(1, 10, 1.0, warmup_steps=4) == pytest.approx(0.5)


def test_best_checkpoint_follows_metric(tmp_path):
    values = iter([0.5, 0.3, 0.7, 0.6])
    out = fit(TinyNet(), NoisyDataset(), ce_loss,
              _cfg(tmp_path, epochs=4, max_steps_per_epoch=1, metric="val_acc", metric_mode="max"),
              evaluate=lambda m, d: {"val_acc": next(values)}, model_name="tiny",
              model_args={"a": 1}, extra={"classes": ["x", "y", "z"]})
    best = load_checkpoint(tmp_path / "best.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] == 3 and best["best_metric"] == 0.7
    assert last["epoch"] == 4 and last["best_metric"] == 0.7 and out["best_metric"] == 0.7
    assert last["model_name"] == "tiny" and last["model_args"] == {"a": 1}
    assert last["extra"] == {"classes": ["x", "y", "z"]}
    assert last["config"]["epochs"] == 4
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_evaluate_runs_in_eval_mode_and_training_resumes_train_mode(tmp_path):
    modes = []

    def loss(model, batch, device):
        modes.append(model.training)
        return ce_loss(model, batch, device)

    fit(TinyNet(), NoisyDataset(), loss, _cfg(tmp_path, max_steps_per_epoch=1),
        evaluate=lambda m, d: {"val_acc": float(not m.training)})
    assert modes == [True, True]
    assert load_checkpoint(tmp_path / "last.pt")["history"][0]["val_acc"] == 1.0


def test_nan_loss_is_reported(tmp_path):
    def bad(model, batch, device):
        return torch.tensor(float("nan"), requires_grad=True), {}

    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(TinyNet(), NoisyDataset(), bad, _cfg(tmp_path))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, resume=True))


def test_resume_from_weights_without_training_state_is_a_clear_error(tmp_path):
    # An exported (deployable) copy dropped as last.pt has no optimizer: used to be a KeyError.
    from rnnpool.train.checkpoint import export_weights

    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path / "a", epochs=1))
    export_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: not a training checkpoint.*optimizer"):
        fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path / "b", resume=True))


def test_resume_warns_about_changed_settings_only(tmp_path, capsys):
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1))
    capsys.readouterr()
    # More epochs and a new learning rate change the run; log_every and progress do not.
    fit(TinyNet(), NoisyDataset(), ce_loss,
        _cfg(tmp_path, epochs=2, lr=0.2, log_every=3, resume=True))
    err = capsys.readouterr().err
    assert "epochs 1 -> 2" in err and "lr 0.1 -> 0.2" in err
    assert "log_every" not in err and "resume" not in err.split("settings")[1]
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=3, lr=0.2, resume=True))
    assert "lr" not in capsys.readouterr().err  # the same settings as the last run's


def test_resume_refuses_another_model(tmp_path):
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1), model_name="tiny",
        model_args={"width": 4})
    with pytest.raises(ValueError, match="'tiny', not 'other'"):
        fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, resume=True), model_name="other")
    with pytest.raises(ValueError, match="model arguments"):
        fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, resume=True), model_name="tiny",
            model_args={"width": 8})
    wider = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="another architecture"):
        fit(wider, NoisyDataset(), ce_loss, _cfg(tmp_path, resume=True))


# --------------------------------------------------------------------------- DDP (gloo, CPU)

def _ddp_worker(rank, world, port, out_dir, data):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
    model = nn.Linear(4, 3)
    if rank == 0:
        torch.save(_state(model), os.path.join(out_dir, "init.pt"))
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.5, momentum=0.0, weight_decay=0.0,
                      max_steps_per_epoch=1, out_dir=out_dir, progress=False, seed=5,
                      metric="train_loss", metric_mode="min", device="cpu")

    def loss_fn(m, batch, device):
        x, y = batch
        return F.cross_entropy(m(x), y), {}

    fit(model, TensorDataset(*data), loss_fn, cfg)
    torch.save(_state(model), os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_gloo_two_processes_stay_in_sync_and_average_gradients(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g))
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path), data), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # Independent reference: one plain SGD step on the union of both ranks' batches.
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(5 + 0)).tolist()
    idx = perm[0::2][:4] + perm[1::2][:4]  # DistributedSampler: rank r takes perm[r::2]
    ref = nn.Linear(4, 3)
    ref.load_state_dict(torch.load(tmp_path / "init.pt"))
    loss = (F.cross_entropy(ref(data[0][idx[:4]]), data[1][idx[:4]])
            + F.cross_entropy(ref(data[0][idx[4:]]), data[1][idx[4:]])) / 2
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-6, atol=1e-7)
    assert load_checkpoint(tmp_path / "last.pt")["rng"].__len__() == 2


def test_crash_between_checkpoint_writes_leaves_best_pt_recoverable(tmp_path, monkeypatch):
    # Epoch 2 improves the metric and the process dies while writing its checkpoints. Resuming
    # must end with best.pt holding epoch 2 (the best), whichever write was cut.
    import rnnpool.train.loop as loop

    vals = {1: 0.5, 2: 0.9, 3: 0.6}

    def evaluations(first_epoch):
        epoch = iter(range(first_epoch, 4))
        return lambda m, d: {"val_acc": vals[next(epoch)]}

    class Crash(BaseException):
        pass

    real = loop.save_checkpoint
    writes = []

    def dies_in_epoch_2(obj, path):  # after the first of epoch 2's two writes
        if obj["epoch"] == 2:
            writes.append(path)
            if len(writes) == 2:
                raise Crash(str(path))
        real(obj, path)

    cfg = dict(epochs=3, batch_size=8, lr=0.1, out_dir=str(tmp_path), progress=False, seed=3,
               metric="val_acc")
    monkeypatch.setattr(loop, "save_checkpoint", dies_in_epoch_2)
    with pytest.raises(Crash):
        fit(TinyNet(), NoisyDataset(), ce_loss, TrainConfig(**cfg), evaluate=evaluations(1))
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert len(writes) == 2
    resumed_from = load_checkpoint(tmp_path / "last.pt")["epoch"]
    r = fit(TinyNet(), NoisyDataset(), ce_loss, TrainConfig(resume=True, **cfg),
            evaluate=evaluations(resumed_from + 1))
    best = load_checkpoint(tmp_path / "best.pt")
    assert r["best_metric"] == 0.9
    assert best["epoch"] == 2 and best["history"][-1]["val_acc"] == 0.9


def test_a_capped_epoch_reads_only_the_batches_it_trains_on(tmp_path):
    # With max_steps_per_epoch the loop used to fetch one batch more than it trained on (and
    # threw it away): 1 step of 8 samples per epoch read 16.
    reads = []

    class Counting(NoisyDataset):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    fit(TinyNet(), Counting(), ce_loss, _cfg(tmp_path, epochs=2, max_steps_per_epoch=1))
    assert len(reads) == 2 * 8


def test_temporaries_of_a_killed_checkpoint_write_are_removed_by_the_next_run(tmp_path):
    # A SIGKILL during a write leaves atomic_output's temporary (".last.<8 chars>.pt", as big as
    # a checkpoint, half written) beside last.pt; every such kill used to leave one more for good.
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1))
    stale = [".last.k3_x9q0a.pt", ".best.abcdefgh.pt", ".metrics.0a1b2c3d.csv"]
    for name in stale:
        (tmp_path / name).write_bytes(b"PK\x03\x04 half a checkpoint")
    (tmp_path / ".last.backup.pt").write_bytes(b"a user's file")  # not a temporary: kept
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=2, resume=True))
    assert sorted(os.listdir(tmp_path)) == [".last.backup.pt", "best.pt", "last.pt",
                                            "metrics.csv"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_resume_warns_about_changed_task_settings_in_extra(tmp_path, capsys):
    # Settings outside TrainConfig (data set, crop size, augmentation, sparsity) reach fit() in
    # `extra`; changing them on resume changed the run without the documented warning.
    extra = {"task": "t", "data": {"root": "d", "image_size": 28, "augment": True},
             "sparsity": None}
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1), extra=extra)
    capsys.readouterr()
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1, resume=True), extra=extra)
    assert "warning" not in capsys.readouterr().err
    changed = {"task": "t", "data": {"root": "d", "image_size": 32, "augment": True},
               "sparsity": (0.5, 0.3)}
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1, resume=True), extra=changed)
    err = capsys.readouterr().err
    listed = err.split("checkpoint's (")[1].split("): the run")[0]
    assert listed == "data.image_size 28 -> 32, sparsity None -> (0.5, 0.3)"


def test_a_fresh_run_into_a_folder_with_a_checkpoint_warns(tmp_path, capsys):
    # The old last.pt is replaced only at the end of epoch 1: a run started without --resume by
    # mistake, or killed before then, left the user unaware which run the folder holds.
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1, max_steps_per_epoch=1))
    assert "holds a checkpoint" not in capsys.readouterr().err
    fit(TinyNet(), NoisyDataset(), ce_loss, _cfg(tmp_path, epochs=1, max_steps_per_epoch=1))
    err = capsys.readouterr().err
    assert f"{tmp_path / 'last.pt'} holds a checkpoint (epoch 1)" in err and "--resume" in err


class _Recording(NoisyDataset):
    """NoisyDataset that remembers which indices this process read."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reads = []

    def __getitem__(self, i):
        self.reads.append(int(i))
        return super().__getitem__(i)


class _Crash(Exception):
    pass


def _ddp_resume_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    # The harness owns the process group: fit() must use it and leave it open.
    dist.init_process_group("gloo")
    vals = {1: 0.5, 2: 0.9, 3: 0.6}  # val_acc per epoch: epoch 2 is the best

    def evaluate(model, device):  # runs on rank 0 only; the epoch is the one after last.pt's
        last = os.path.join(out, "last.pt")
        done = load_checkpoint(last)["epoch"] if os.path.exists(last) else 0
        return {"val_acc": vals[done + 1]}

    def cfg(folder, **kw):  # 24 samples, 2 ranks, batch 3: 4 steps per rank and epoch
        return TrainConfig(epochs=3, batch_size=3, lr=0.1, out_dir=folder, progress=False,
                           seed=11, metric="val_acc", device="cpu", **kw)

    results = {}
    out = os.path.join(out_dir, "full")
    data = _Recording(n=24)
    torch.manual_seed(0)
    results["full"] = fit(TinyNet(), data, ce_loss, cfg(out), evaluate=evaluate)
    results["reads"] = data.reads

    out = os.path.join(out_dir, "part")
    steps = []

    def crash_in_epoch_2(model):  # both ranks stop after the first step of epoch 2
        steps.append(1)
        if len(steps) == 5:
            raise _Crash()

    torch.manual_seed(0)
    try:
        fit(TinyNet(), _Recording(n=24), ce_loss, cfg(out), evaluate=evaluate,
            after_step=crash_in_epoch_2)
    except _Crash:
        pass
    torch.manual_seed(1)  # a fresh process: other initial weights, other RNG state
    results["resumed"] = fit(TinyNet(), _Recording(n=24), ce_loss, cfg(out, resume=True),
                             evaluate=evaluate)
    results["group_still_open"] = dist.is_initialized()
    if dist.is_initialized():
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"results{rank}.pt"))


def test_ddp_shards_resume_bit_exactly_and_ranks_agree_on_results(tmp_path, capsys):
    port = 29500 + (os.getpid() + 500) % 1000
    mp.spawn(_ddp_resume_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "results0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "results1.pt", weights_only=False)
    # Sharding: per epoch the two ranks read disjoint halves of all 24 samples (no padding, no
    # ragged batch at 12 per rank), in the order of DistributedSampler's documented shuffle
    # (randperm seeded with seed + epoch, rank r takes perm[r::2]); the shards change per epoch.
    for epoch in range(3):
        perm = torch.randperm(24, generator=torch.Generator().manual_seed(11 + epoch)).tolist()
        for rank, r in enumerate((r0, r1)):
            assert r["reads"][12 * epoch:12 * (epoch + 1)] == perm[rank::2], (epoch, rank)
    # Every rank returns rank 0's results (val metrics exist only there), also after a resume.
    for key in ("full", "resumed"):
        assert r0[key]["best_metric"] == r1[key]["best_metric"] == 0.9, key
        assert r0[key]["history"] == r1[key]["history"], key
    assert r0["group_still_open"] and r1["group_still_open"]
    # Resume under DDP continues exactly: same weights (BatchNorm buffers included) bit for bit.
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    part = load_checkpoint(tmp_path / "part" / "last.pt")
    assert part["epoch"] == full["epoch"] == 3
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k
    assert load_checkpoint(tmp_path / "part" / "best.pt")["epoch"] == 2
    # Resuming on another number of processes changes the run: it must say so.
    capsys.readouterr()
    fit(TinyNet(), NoisyDataset(n=24), ce_loss,
        TrainConfig(epochs=3, batch_size=3, lr=0.1, out_dir=str(tmp_path / "part"),
                    progress=False, seed=11, metric="val_acc", device="cpu", resume=True))
    assert "processes 2 -> 1" in capsys.readouterr().err


def _face_batch():
    """4 grey-ish 64x64 images with 1, 1, 3 and 3 faces (pixel xyxy boxes): the two ranks'
    halves hold very different numbers of positive anchors."""
    g = torch.Generator().manual_seed(4)
    images = torch.rand(4, 3, 64, 64, generator=g)
    one = torch.tensor([[8.0, 8.0, 30.0, 30.0]])
    three = torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 6.0, 60.0, 36.0],
                          [10.0, 36.0, 34.0, 60.0]])
    return images, [{"boxes": b} for b in (one, one, three, three)]


def _ddp_detection_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    from rnnpool.detection.commands import detection_loss_fn
    from rnnpool.models import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = create_model("rnnpool_face_m4").eval()  # BatchNorm frozen: only the loss differs
    ddp = nn.parallel.DistributedDataParallel(model)
    images, targets = _face_batch()
    half = slice(2 * rank, 2 * rank + 2)
    loss, logs = detection_loss_fn()(ddp, (images[half], targets[half]), torch.device("cpu"))
    loss.backward()
    torch.save({"loss": loss.item(), "logs": logs,
                "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None}},
               os.path.join(out_dir, f"det{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_detection_loss_is_normalised_by_the_positives_of_all_ranks(tmp_path):
    # One process with the global batch divides the loss by all positives; two DDP ranks that
    # each divide by their own positives (1-face vs 3-face images) gave other gradients.
    from rnnpool.detection.loss import MultiBoxLoss
    from rnnpool.detection.predict import prepare_batch
    from rnnpool.models import create_model

    port = 29500 + (os.getpid() + 250) % 1000
    mp.spawn(_ddp_detection_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"det{k}.pt", weights_only=False) for k in (0, 1)]
    torch.manual_seed(0)
    model = create_model("rnnpool_face_m4").eval()
    images, targets = _face_batch()
    x = prepare_batch(images, model.config)
    cls, reg = model(x)
    loss, logs = MultiBoxLoss()(cls, reg, model.anchors(tuple(x.shape[-2:])),
                                [t["boxes"] for t in targets])
    loss.backward()
    assert r[0]["logs"]["num_pos"] != r[1]["logs"]["num_pos"]  # the case that matters
    assert (r[0]["loss"] + r[1]["loss"]) / 2 == pytest.approx(loss.item(), rel=1e-5)
    for key in ("loss_cls", "loss_box"):
        assert (r[0]["logs"][key] + r[1]["logs"][key]) / 2 == pytest.approx(logs[key], rel=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            for k in (0, 1):  # DDP leaves the averaged gradient on every rank
                torch.testing.assert_close(r[k]["grads"][name], p.grad, rtol=1e-4, atol=1e-6,
                                           msg=name)


def test_each_process_trains_on_the_gpu_of_its_local_rank(monkeypatch):
    # "cuda" was torch.device("cuda") (DDP's device_ids=[None]); an explicit cuda:0 under
    # torchrun put every process on GPU 0.
    from rnnpool.train.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # one process: any GPU
    with pytest.raises(ValueError, match="local rank"):
        resolve_device("cuda:0", local_rank=1, world_size=2)
    with pytest.raises(ValueError, match="has 2 CUDA devices"):
        resolve_device("cuda", local_rank=2, world_size=3)


def test_resume_restores_the_rng_of_the_gpus_still_visible(monkeypatch):
    from rnnpool.train.loop import _get_rng_state, _set_rng_state

    state = _get_rng_state()
    state["cuda"] = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    _set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0], state["cuda"][0])
