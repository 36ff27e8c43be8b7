"""Learning-rate schedules, with ``torch.optim.lr_scheduler``'s names, arguments and numbers.

Closed-form schedules: StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR (linear
warm-up), LambdaLR, OneCycleLR. Each writes ``lr`` into every parameter group of its optimizer from
a closed form of the step count ``last_epoch`` (and the group's ``initial_lr``). A closed form
(instead of PyTorch's multiplicative recurrences, which give the same rates up to rounding) makes
resuming exact: restoring ``last_epoch`` restores the schedule, with no accumulated rounding to
replay. Call ``step()`` once per epoch or once per iteration, consistently, after
``optimizer.step()``; ``get_last_lr()`` returns what the last call set.

ReduceLROnPlateau is the exception: it reacts to a metric (``step(val_loss)``), so its rates are
state, kept in the optimizer's groups and restored with the optimizer's state_dict.

``state_dict()`` holds plain ints, floats, strings, lists and dicts (no functions), so a
checkpoint stores it as JSON.
"""
import math
import numbers
import types
from bisect import bisect_right


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _per_group(name, optimizer, value):
    """``value`` repeated for every parameter group, or a list/tuple with one value per group."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values, the optimizer has {n} parameter groups")
        return [float(v) for v in value]
    return [float(value)] * n


class LRScheduler:
    _not_saved = ("optimizer",)  # attributes state_dict leaves out

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: last_epoch={last_epoch} resumes a schedule, but "
                               f"param group {i} has no 'initial_lr' (load the optimizer state first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr, epoch):
        """The learning rate of a group whose initial rate is ``base_lr`` after ``epoch`` steps."""
        raise NotImplementedError

    def lrs_at(self, epoch):
        """The learning rate of every parameter group after ``epoch`` steps."""
        return [self.lr_at(base, epoch) for base in self.base_lrs]

    def step(self):
        self.last_epoch += 1
        self._last_lr = self.lrs_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute except the optimizer: plain ints, floats and lists."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k not in self._not_saved}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v) for k, v in state_dict.items()})


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each step count in ``milestones`` (a milestone given
    twice multiplies twice, as in PyTorch)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones):
            raise ValueError(f"MultiStepLR: milestones must be ints >= 0, got {milestones!r}")
        self.milestones, self.gamma = sorted(milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every step."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        if not _is_number(gamma) or not float(gamma) > 0:
            raise ValueError(f"ExponentialLR: gamma must be a number > 0, got {gamma!r}")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """Half a cosine from the initial rate down to ``eta_min`` over ``T_max`` steps
    (SGDR without restarts); the curve continues periodically beyond ``T_max``, as in PyTorch."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be an int >= 1, got {T_max!r}")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Scale the rate linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps,
    then hold it: with ``start_factor`` small and ``end_factor=1`` this is a linear warm-up."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0.0 < start_factor <= 1.0 or not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"LinearLR: need 0 < start_factor <= 1 and 0 <= end_factor <= 1, got "
                             f"start_factor={start_factor}, end_factor={end_factor}")
        if not isinstance(total_iters, int) or total_iters < 1:
            raise ValueError(f"LinearLR: total_iters must be an int >= 1, got {total_iters!r}")
        self.start_factor, self.end_factor, self.total_iters = float(start_factor), float(end_factor), total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        frac = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class LambdaLR(LRScheduler):
    """The initial rate times ``lr_lambda(epoch)``: one function for all groups, or a list with
    one per group. ``state_dict`` saves no functions; for a callable *object* it saves its
    ``__dict__`` (its settings), as PyTorch does, and ``load_state_dict`` restores that."""
    _not_saved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(fns) != n:
            raise ValueError(f"LambdaLR: got {len(fns)} lr_lambdas for {n} parameter groups")
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda must be callable (epoch -> factor), got {type(fn).__name__}")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def lrs_at(self, epoch):
        return [base * fn(epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self):
        state = super().state_dict()
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) or not hasattr(fn, "__dict__")
                               else dict(fn.__dict__) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        super().load_state_dict(state)
        for fn, attrs in zip(self.lr_lambdas, saved):
            if attrs is not None:
                fn.__dict__.update(attrs)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, "Super-Convergence", 2017): the rate rises from
    ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then
    anneals (``"cos"`` or ``"linear"``) to ``initial_lr / final_div_factor``. ``three_phase`` first
    comes back down to the initial rate symmetrically and anneals to the minimum in a third phase.
    With ``cycle_momentum`` the momentum (SGD, RMSprop: ``momentum``; Adam: ``betas[0]``) moves
    the opposite way between ``max_momentum`` and ``base_momentum``.

    As in PyTorch, the per-group bounds live in the optimizer's groups (``initial_lr``,
    ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``), so they resume with the
    optimizer's state; ``step()`` may be called ``total_steps`` times."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        self.total_steps = self._count_steps(total_steps, epochs, steps_per_epoch)
        if not _is_number(pct_start) or not 0.0 <= float(pct_start) <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be a number in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self._phases = self._make_phases(float(pct_start), bool(three_phase))
        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum and not self.use_beta1 and "momentum" not in optimizer.defaults:
            raise ValueError(f"OneCycleLR: cycle_momentum=True needs an optimizer with momentum or betas, "
                             f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)")
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, _per_group("OneCycleLR: max_lr", optimizer, max_lr)):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if self.cycle_momentum:
                highs = _per_group("OneCycleLR: max_momentum", optimizer, max_momentum)
                lows = _per_group("OneCycleLR: base_momentum", optimizer, base_momentum)
                for group, high, low in zip(optimizer.param_groups, highs, lows):
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _count_steps(total_steps, epochs, steps_per_epoch):
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OneCycleLR: {name} must be an int >= 1, got {value!r}")
            return value
        if total_steps is not None:
            return positive_int("total_steps", total_steps)
        if epochs is None or steps_per_epoch is None:
            raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        return positive_int("epochs", epochs) * positive_int("steps_per_epoch", steps_per_epoch)

    def _make_phases(self, pct_start, three_phase):
        """(end_step, start key, end key, start momentum key, end momentum key) per phase, as PyTorch
        lays them out (a phase starts at the previous phase's end step)."""
        rise_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            return [[rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                    [float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"],
                    [self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"]]
        return [[rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"]]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _position(self, epoch):
        """The phase that step ``epoch`` falls in and the fraction of it done."""
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {epoch} times; the schedule has total_steps="
                             f"{self.total_steps}")
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if epoch <= end or i == len(self._phases) - 1:
                if end == start:
                    raise ValueError(f"OneCycleLR: phase {i} of the schedule is empty (total_steps="
                                     f"{self.total_steps} is too few for these phases)")
                return phase, (epoch - start) / (end - start)
            start = end

    def lrs_at(self, epoch):
        phase, pct = self._position(epoch)
        return [self._anneal(group[phase[1]], group[phase[2]], pct) for group in self.optimizer.param_groups]

    def step(self):
        super().step()
        if self.cycle_momentum:
            phase, pct = self._position(self.last_epoch)
            for group in self.optimizer.param_groups:
                momentum = self._anneal(group[phase[3]], group[phase[4]], pct)
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum


class ReduceLROnPlateau(LRScheduler):
    """Multiply the rate by ``factor`` once a metric has not improved for more than ``patience``
    calls of ``step(metric)``.

    ``mode`` "min" (a loss) or "max" (an accuracy); an improvement must beat the best value by
    ``threshold``, relative (``best * (1 - threshold)`` for "min") or absolute (``best - threshold``)
    per ``threshold_mode``. After a reduction, ``cooldown`` calls pass before bad calls count
    again. No rate goes below ``min_lr`` (one value, or one per group), and a reduction smaller than
    ``eps`` is skipped. The logic and its corner cases are PyTorch's, step for step."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if not _is_number(factor) or not 0.0 <= float(factor) < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be a number in [0, 1), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an int >= 0, got {value!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.optimizer = optimizer
        self.factor, self.patience, self.cooldown, self.eps = float(factor), patience, cooldown, float(eps)
        self.mode, self.threshold, self.threshold_mode = mode, float(threshold), threshold_mode
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else float(min_lr)
        self.min_lrs = _per_group("ReduceLROnPlateau: min_lr", optimizer, min_lr)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def is_better(self, value, best):
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics):
        """Record this step's metric (a number or a one-element tensor) and reduce the rates if it
        has not improved for long enough."""
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter groups, but "
                                   f"min_lr was given for {len(self.min_lrs)}; set scheduler.min_lrs to match")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                group["lr"] = new
