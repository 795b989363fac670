"""The training loop: plain PyTorch, independent of Ray.

``run_training(spec, data, host)`` trains one model. What differs between a Ray Train
worker and a local process is behind two small interfaces: ``DataSource`` (where this
worker's batches come from) and ``Host`` (rank, DDP wrapping, checkpoint/report,
progress, cancellation). ``deeptrain.jobs`` provides the Ray versions; tests use local ones.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch import Tensor, nn

from deeptrain.models.tasks import predict_with_flips
from deeptrain.params import HyperParams
from deeptrain.params.schema import INIT_IMAGENET
from deeptrain.templates import Template, get_template
from deeptrain.training import metrics as task_metrics
from deeptrain.training.augment import batch_generator, crop_flip_normalize
from deeptrain.training.init_from import InitFromError, apply_init_from, load_state_dict_source
from deeptrain.training.param_groups import make_optimizer, set_train_mode
from deeptrain.training.schedule import StepSchedule, apply_warmup


@dataclass(frozen=True)
class TrainSpec:
    """Everything a worker needs (it travels in Ray's ``train_loop_config``); ``params`` is the
    plan's resolved, frozen ``HyperParams``, read as is by the model builder and the optimizer."""

    task: str
    template: str
    params: HyperParams
    concept_ids: list[str]
    steps_per_epoch: int
    world_size: int = 1


class DataSource(Protocol):
    def train_batches(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        """This worker's preprocessed batches for an epoch (at least ``steps_per_epoch`` of them)."""

    def validation_batches(self) -> Iterable[dict[str, Tensor]]:
        """The whole validation split, preprocessed (only rank 0 asks): what every periodic evaluation reads."""

    def test_batches(self) -> Iterable[dict[str, Tensor]]:
        """The whole test split, preprocessed (only rank 0 asks, once, after the last epoch or a stop)."""


class Host(Protocol):
    rank: int
    world_size: int

    def prepare_model(self, model: nn.Module) -> nn.Module: ...

    def all_reduce_mean(self, value: float) -> float: ...

    def replicas_in_sync(self, model: nn.Module) -> bool | None:
        """Whether every worker holds the same weights (None with one worker)."""

    def restore(self) -> dict[str, Any] | None: ...

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None: ...

    def progress(self, info: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...


class _LossModule(nn.Module):
    """Routes ``compute_loss`` through ``forward`` so a DDP wrapper syncs its gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, targets: Any) -> dict[str, Tensor]:
        return self.model.compute_loss(images, targets)


def task_kwargs(task: str, params: HyperParams) -> dict[str, Any]:
    """The builder keyword arguments a task takes from the hyperparameters."""
    if task == "classification":
        return {"logreg": params.logreg}
    if task == "embedding":
        return {"embedding_dim": params.embedding_dim}
    return {"use_perclass_regression": params.use_perclass_regression}


def build_model(task: str, template_name: str, params: HyperParams, num_classes: int) -> nn.Module:
    """The template's model, its base initialized from ``init_from`` when it names weights
    (``params.pretrained_base``: the plan resolved ``imagenet`` & co. to a ``URI#sha256=HEX``; the file's
    digest is checked). Without a plan (a local loop), ``imagenet-if-available`` and ``scratch`` train from
    scratch and ``imagenet`` is an error: only the plan finds weights."""
    template = get_template(task, template_name)
    if params.init_from == INIT_IMAGENET:
        raise InitFromError("init_from=imagenet is resolved by the plan (deeptrain.weights.resolve_init_from), "
                            "not by the model builder; plan the run, or give the weights' path or URI")
    model = template.build(num_classes, **task_kwargs(task, params))
    if params.pretrained_base:
        apply_init_from(model, load_state_dict_source(params.init_from), template.head_prefixes)
    return model


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


REPORT_SAMPLES = 6
CURVE_POINTS = 256  # the most [global_step, loss, lr] points a progress record carries (the live loss curve)


def _to_uint8(x: Tensor, template: Template) -> list[Tensor]:
    """Normalized model inputs back to displayable uint8 images."""
    mean = torch.tensor(template.mean).view(1, 3, 1, 1)
    std = torch.tensor(template.std).view(1, 3, 1, 1)
    return list((x.float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8))


@torch.no_grad()
def evaluate(model: nn.Module, template: Template, batches: Iterable[dict[str, Tensor]], params: HyperParams,
             concept_ids: list[str], device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, raw outputs) on preprocessed test batches; raw outputs feed the report's plots."""
    task = template.task
    was_training = model.training
    model.eval()
    outputs: list[Any] = []
    truths: list[Any] = []
    samples: list[Tensor] = []  # detection: the first test images, for the report's box plot
    for batch in batches:
        x, y = crop_flip_normalize(batch, image_size=params.image_size, mean=template.mean, std=template.std,
                                   train=False, flip=False)
        out = predict_with_flips(model, task, x.to(device), params.average_horizontal_flips)
        if task == "detection":
            outputs.extend({k: v.cpu() for k, v in o.items()} for o in out)
            truths.extend(y)
            samples.extend(_to_uint8(x[: max(0, REPORT_SAMPLES - len(samples))], template))
        else:
            outputs.append(out.cpu())
            truths.append(y)
    model.train(was_training)
    if task == "detection":
        raw = {"preds": outputs, "targets": truths, "samples": samples,
               "score_threshold": params.detection_score_threshold}
        return task_metrics.detection_metrics(outputs, truths, concept_ids), raw
    scores, targets = torch.cat(outputs), torch.cat(truths)
    if task == "embedding":
        return task_metrics.embedding_metrics(scores, targets), {"embeddings": scores, "labels": targets}
    return (task_metrics.classification_metrics(scores, targets, concept_ids, params.logreg),
            {"scores": scores, "targets": targets})


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    lr: float
    images_per_s: float
    seconds: float
    # where the epoch's training steps spent their time: waiting for the next batch
    # (input pipeline), crop/flip/normalize, forward+backward+step (the model)
    data_wait_s: float = 0.0
    augment_s: float = 0.0
    compute_s: float = 0.0
    # data parallel: every worker held the same weights after the epoch (what DDP's all-reduce guarantees);
    # None with one worker
    replicas_in_sync: bool | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the validation evaluation of this epoch, if any
    test: dict[str, Any] = field(default_factory=dict)  # the test evaluation (the last epoch's, or a stop's)


@dataclass
class _Run:
    """One worker's training state: the model, its optimizer and schedule, and where it runs."""

    spec: TrainSpec
    host: Host
    template: Template
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: StepSchedule
    loss_module: nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    restores: list[int] = field(default_factory=list)  # epochs this run was restored at (worker restarts, --resume)
    start_epoch: int = 0
    steps_done: int = 0  # optimizer steps this process ran (for the images/s and ETA of progress)
    started: float = field(default_factory=time.perf_counter)
    # the live loss curve: [global_step, loss, lr] of every ``curve_stride``-th step, at most CURVE_POINTS of them
    curve: list[list[float]] = field(default_factory=list)
    curve_stride: int = 1
    # fp16 keeps small gradients from flushing to zero by scaling the loss (bf16 has fp32's range: none needed)
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def build(cls, spec: TrainSpec, host: Host) -> "_Run":
        params = spec.params
        template = get_template(spec.task, spec.template)
        device = torch.device("cuda" if params.use_gpu is not False and torch.cuda.is_available() else "cpu")
        torch.manual_seed(params.seed)
        model = build_model(spec.task, spec.template, params, len(spec.concept_ids))
        optimizer = make_optimizer(model, template.head_prefixes, params)
        run = cls(spec, host, template, device, model, optimizer, StepSchedule(optimizer, params))
        run.scaler = torch.amp.GradScaler(device.type) if params.precision == "fp16" else None
        state = host.restore()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            run.history, run.start_epoch = state["history"], state["epoch"]
            torch.set_rng_state(state["rng"])
            run.restores = [*state.get("restores", []), run.start_epoch]
        model.to(device)
        run.loss_module = host.prepare_model(_LossModule(model))
        run.started = time.perf_counter()
        return run

    def step(self, batch: dict[str, Any], epoch: int, step: int) -> tuple[float, float, float]:
        """One optimizer step; (loss, seconds augmenting, seconds computing)."""
        params, spec = self.spec.params, self.spec
        t1 = time.perf_counter()
        x, y = crop_flip_normalize(
            batch, image_size=params.image_size, mean=self.template.mean, std=self.template.std, train=True,
            flip=params.average_horizontal_flips, generator=batch_generator(params.seed, epoch, self.host.rank, step),
        )
        x = x.to(self.device)
        y = [{k: v.to(self.device) for k, v in t.items()} for t in y] if spec.task == "detection" else y.to(self.device)
        t2 = time.perf_counter()
        apply_warmup(self.optimizer, self.scheduler, epoch, epoch * spec.steps_per_epoch + step, params.warmup_steps)
        with _autocast(params.precision, self.device):
            loss = self.loss_module(x, y)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:  # a step whose scaled gradients overflowed is skipped and the scale lowered
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        loss_value = float(loss.detach())  # syncs the device, so the step's time is all in
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at epoch {epoch}, step {step}; "
                                     "lower lrate or check the data")
        self.steps_done += 1
        return loss_value, t2 - t1, time.perf_counter() - t2

    def progress(self, epoch: int, step: int, loss: float) -> None:
        spec, params = self.spec, self.spec.params
        elapsed = time.perf_counter() - self.started
        done = epoch * spec.steps_per_epoch + step + 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.sample_curve(done, loss, lr)
        self.host.progress({
            "epoch": epoch + 1, "num_epochs": params.num_epochs, "step": step + 1,
            "steps_per_epoch": spec.steps_per_epoch, "loss": loss, "lr": lr,
            "images_per_s": self.steps_done * params.batch_size / elapsed,
            "eta_s": (spec.steps_per_epoch * params.num_epochs - done) * elapsed / self.steps_done,
            # what a page opened mid-run needs to draw the whole run: finished epochs and the loss curve
            "history": list(self.history), "curve": [list(p) for p in self.curve],
        })

    def sample_curve(self, global_step: int, loss: float, lr: float) -> None:
        """Keep the steps that are multiples of ``curve_stride``; when more than CURVE_POINTS, double the
        stride and drop the points off it, so the curve spans the whole run in bounded size."""
        if global_step % self.curve_stride:
            return
        self.curve.append([global_step, loss, lr])
        while len(self.curve) > CURVE_POINTS:
            self.curve_stride *= 2
            self.curve = [p for p in self.curve if p[0] % self.curve_stride == 0]

    def train_epoch(self, epoch: int, data: DataSource) -> EpochRecord:
        set_train_mode(self.model, self.template.head_prefixes, self.spec.params.base_frozen)
        epoch_start = time.perf_counter()
        loss_sum = wait_s = augment_s = compute_s = 0.0
        lr = self.optimizer.param_groups[0]["lr"]
        batches = data.train_batches(epoch)
        for step in range(self.spec.steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(batches)
            wait_s += time.perf_counter() - t0
            loss, augment, compute = self.step(batch, epoch, step)
            loss_sum, augment_s, compute_s = loss_sum + loss, augment_s + augment, compute_s + compute
            if self.host.rank == 0:
                self.progress(epoch, step, loss)
        self.scheduler.step()
        steps, seconds = self.spec.steps_per_epoch, time.perf_counter() - epoch_start
        return EpochRecord(epoch=epoch + 1, train_loss=self.host.all_reduce_mean(loss_sum / max(steps, 1)), lr=lr,
                           images_per_s=steps * self.spec.params.batch_size / seconds, seconds=seconds,
                           data_wait_s=wait_s, augment_s=augment_s, compute_s=compute_s,
                           replicas_in_sync=self.host.replicas_in_sync(self.model))

    def evaluate(self, epoch: int, batches: Iterable[dict[str, Tensor]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(metrics with the epoch they are from, raw outputs) of the model on ``batches``."""
        spec = self.spec
        metrics, raw = evaluate(self.model, self.template, batches, spec.params, spec.concept_ids, self.device)
        return {"epoch": epoch + 1, **metrics}, raw

    def checkpoint(self, epoch: int, raw: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch + 1, "history": self.history, "eval": raw,
            "rng": torch.get_rng_state(), "restores": self.restores,
            "params": self.spec.params.model_dump(mode="json"),  # what this worker trained with (a record)
        }


def version_metrics(history: list[dict[str, Any]], validation_split: str = "validation") -> dict[str, Any]:
    """A version's record of a run's history: the test evaluation's metrics (``split: "test"``), with
    ``validation`` the scalars of the last validation evaluation (its ``epoch``, and ``split``: the split it
    read, "test" when the data had no validation inputs). A run stopped before its end without a test
    evaluation (a trial Tune's scheduler ended) has only ``validation``, and ``split`` None."""
    last = next((h["metrics"] for h in reversed(history) if h.get("metrics")), {})
    test = next((h["test"] for h in reversed(history) if h.get("test")), {})
    validation = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**test, "split": "test" if test else None,
            "validation": {**validation, "split": validation_split} if validation else {}}


def run_training(spec: TrainSpec, data: DataSource, host: Host) -> dict[str, Any]:
    """Train; returns ``{"history", "metrics" (the final test evaluation), "validation" (the last validation
    evaluation), "stopped", "restores"}``. Checkpoints go through ``host.report``.

    Every ``test_freq`` epochs (and after the last, or a stop) rank 0 evaluates on the validation split;
    those scalars are what ``host.report`` sends (what Tune's scheduler and best trial compare). The test
    split is evaluated once, after the last epoch or a stop: reported, never used to decide anything.
    """
    run = _Run.build(spec, host)
    params = spec.params
    metrics: dict[str, Any] = next((dict(h["metrics"]) for h in reversed(run.history) if h["metrics"]), {})
    test: dict[str, Any] = {}
    stopped = False
    for epoch in range(run.start_epoch, params.num_epochs):
        record = run.train_epoch(epoch, data)
        last = epoch + 1 == params.num_epochs
        stopped = host.should_stop()
        raw: dict[str, Any] | None = None
        if host.rank == 0 and ((epoch + 1) % params.test_freq == 0 or last or stopped):
            metrics, _ = run.evaluate(epoch, data.validation_batches())
            record.metrics = metrics
            if last or stopped:
                test, raw = run.evaluate(epoch, data.test_batches())
                record.test = test
        run.history.append(asdict(record))
        # the last evaluation's scalars ride along with every epoch; eval_epoch says which epoch they are from
        host.report({**{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"},
                     "epoch": epoch + 1, "train_loss": record.train_loss, "lr": record.lr,
                     **({"eval_epoch": metrics["epoch"]} if metrics else {})},
                    run.checkpoint(epoch, raw) if host.rank == 0 else None)
        if stopped:
            break
    return {"history": run.history, "metrics": test, "validation": metrics, "stopped": stopped,
            "restores": run.restores}
