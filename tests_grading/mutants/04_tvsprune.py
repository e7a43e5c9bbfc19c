"""Wrong answers to the code questions of notebook 04, one dropped requirement each (see ../test_mutants.py).

SETUP stands in for the lesson's slow cells: ``scores`` as section 1 computes them, and ``res.model`` (in the
notebook IterTVSPrune's result, 94-183 s) as a ResNet-20 pruned by the eps rule at 0.05.
"""
# ruff: noqa: F821
import torch  # for default arguments; the bodies use the notebook's names

FUNCTIONS = {"q04_1": "my_accept_step", "q04_2": "my_bn_means", "q04_3": "my_eps_rule"}
SETUP = """
from types import SimpleNamespace
scores = pl.tvs_scores(model, graph, data=dist)
res = SimpleNamespace(model=prune(model, graph, eps_candidates(scores, 0.05)))
"""


# q04_1 my_accept_step: eps_candidates, prune (a new model), evaluate on val; accept at acc >= floor (pruned, same
# eps); else current itself and round(eps - eps_step, 10); the accuracy in both cases; current never modified

def q04_1__no_rounding(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops round(..., 10): the next eps is eps - eps_step as computed in floating point."""
    candidate = prune(current, graph, eps_candidates(scores, eps))
    accuracy = evaluate(candidate, val)
    if accuracy >= floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(current, eps - eps_step, False, accuracy)


def q04_1__strict_floor(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops 'at least floor': accepts only above the floor (>)."""
    candidate = prune(current, graph, eps_candidates(scores, eps))
    accuracy = evaluate(candidate, val)
    if accuracy > floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(current, round(eps - eps_step, 10), False, accuracy)


def q04_1__default_eps_step(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops the eps_step argument: always lowers eps by 0.025."""
    candidate = prune(current, graph, eps_candidates(scores, eps))
    accuracy = evaluate(candidate, val)
    if accuracy >= floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(current, round(eps - 0.025, 10), False, accuracy)


def q04_1__copy_on_reject(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops 'return current itself' on a rejection: returns a copy."""
    candidate = prune(current, graph, eps_candidates(scores, eps))
    accuracy = evaluate(candidate, val)
    if accuracy >= floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(copy.deepcopy(current), round(eps - eps_step, 10), False, accuracy)


def q04_1__prunes_in_place(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops 'never modify current': prunes current in place (and so returns the pruned model on a rejection)."""
    accuracy = evaluate(prune(copy.deepcopy(current), graph, eps_candidates(scores, eps)), val)
    candidate = prune(current, graph, eps_candidates(scores, eps), inplace=True)
    if accuracy >= floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(current, round(eps - eps_step, 10), False, accuracy)


def q04_1__accuracy_of_current(current, graph, scores, eps, floor, val, eps_step=0.025):
    """drops 'the accuracy of the result': gates on (and reports) the accuracy of current."""
    candidate = prune(current, graph, eps_candidates(scores, eps))
    accuracy = evaluate(current, val)
    if accuracy >= floor:
        return StepOutcome(candidate, eps, True, accuracy)
    return StepOutcome(current, round(eps - eps_step, 10), False, accuracy)


# q04_2 my_bn_means(model, split, batch_size): a copy; per BN: keep var and momentum, reset, momentum None, only the
# BNs in train mode; forward every batch of batches(split, batch_size) without gradients; put back; eval mode

def _mutant_bn_means(model, split, batch_size, *, copy_model=True, momentum_none=True, restore_var=True,
                     restore_momentum=True, reset=True, only_bns=True, final_eval=True):
    recal = copy.deepcopy(model).eval() if copy_model else model.eval()
    bns = [m for m in recal.modules() if isinstance(m, nn.BatchNorm2d)]
    kept = [(m.running_var.clone(), m.momentum) for m in bns]
    if not only_bns:
        recal.train()
    for m in bns:
        if reset:
            m.reset_running_stats()
        if momentum_none:
            m.momentum = None
        m.train()
    with torch.no_grad():
        for x, _ in batches(split, batch_size):
            recal(x)
    for m, (var, momentum) in zip(bns, kept):
        if restore_var:
            m.running_var.copy_(var)
        if restore_momentum:
            m.momentum = momentum
    return recal.eval() if final_eval else recal


def q04_2__in_place(model, split, batch_size=250):
    """drops 'a copy of model': recalibrates the caller's model."""
    return _mutant_bn_means(model, split, batch_size, copy_model=False)


def q04_2__keeps_momentum(model, split, batch_size=250):
    """drops momentum = None: an exponential average over the batches instead of a plain one."""
    return _mutant_bn_means(model, split, batch_size, momentum_none=False)


def q04_2__variance_replaced(model, split, batch_size=250):
    """drops 'trained running variances kept': leaves the re-estimated variances."""
    return _mutant_bn_means(model, split, batch_size, restore_var=False)


def q04_2__momentum_not_restored(model, split, batch_size=250):
    """drops 'put the momentum back': leaves momentum None."""
    return _mutant_bn_means(model, split, batch_size, restore_momentum=False)


def q04_2__no_reset(model, split, batch_size=250):
    """drops reset_running_stats(): the average starts from the trained statistics."""
    return _mutant_bn_means(model, split, batch_size, reset=False)


def q04_2__whole_model_in_train_mode(model, split, batch_size=250):
    """drops 'only the BNs in train mode': model.train() (a Dropout is then active)."""
    return _mutant_bn_means(model, split, batch_size, only_bns=False)


def q04_2__left_in_train_mode(model, split, batch_size=250):
    """drops 'return the model in eval mode'."""
    return _mutant_bn_means(model, split, batch_size, final_eval=False)


def q04_2__ignores_batch_size(model, split, batch_size=250):
    """drops the batch_size argument: always batches of 250."""
    return _mutant_bn_means(model, split, 250)


# q04_3 my_eps_rule(s, eps): [j, ...] with s_j / max s <= eps * mean(s / max s)

def q04_3__strict(s, eps):
    """drops the <= (note the <=): uses <."""
    t = s / s.max()
    return [j for j in range(len(s)) if t[j] < eps * t.mean()]


def q04_3__max_not_mean(s, eps):
    """drops the mean: compares with eps times the max normalised score (1)."""
    t = s / s.max()
    return [j for j in range(len(s)) if t[j] <= eps]


def q04_3__median_not_mean(s, eps):
    """drops the mean: compares with eps times the median normalised score."""
    t = s / s.max()
    return [j for j in range(len(s)) if t[j] <= eps * t.median()]


def q04_3__returns_a_tensor(s, eps):
    """drops 'a list of channel indices': returns a tensor of indices."""
    t = s / s.max()
    return torch.nonzero(t <= eps * t.mean()).flatten()


def q04_3__normalised_by_sum(s, eps):
    """drops 'normalise by the largest score' AND the mean: compares s / sum(s) with eps."""
    t = s / s.sum()
    return [j for j in range(len(s)) if t[j] <= eps]
