"""Wrong answers to the code questions of notebook 06, one dropped requirement each (see ../test_mutants.py).

SETUP is empty: the tests of notebook 06 read only the first code cell's names (the ResNet-20, its graph and the
``dist`` split) and build their own inputs; the lesson's slow cells (hifi scores, the pruning runs, the synthesis)
are not needed.
"""
# ruff: noqa: F821
import torch  # for the bodies' tensors; the rest uses the notebook's names

FUNCTIONS = {"q06_1": "my_fidelity", "q06_2": "my_delta_star", "q06_3": "my_bn_loss"}
SETUP = """
"""


# q06_1 my_fidelity(Y, A): alpha_i = E[Y A_i] / E[A_i^2], s_i = E[Y A_i]^2 / (E[A_i^2] E[Y^2]) uncentred, the energy of
# Y itself, a zero column -> alpha = s = 0, shapes (n,)

def _mutant_fidelity(Y, A, *, centre=False, square=True, energy_of_y=True, zero_rule=True, alpha_over_energy=False):
    if centre:
        Y, A = Y - Y.mean(), A - A.mean(0)
    r = (A * Y[:, None]).mean(0)
    q = (A * A).mean(0)
    energy = (Y * Y).mean() if energy_of_y else q.sum()
    if square:
        s = r * r / (q * energy)
    else:
        s = r / torch.sqrt(q * energy)
    alpha = r / energy if alpha_over_energy else r / q
    if zero_rule:
        alpha = torch.where(q > 0, alpha, torch.zeros_like(alpha))
        s = torch.where(q > 0, s, torch.zeros_like(s))
    return alpha, s


def q06_1__centred(Y, A):
    """drops 'uncentred, as printed': subtracts the means of Y and of each column first."""
    return _mutant_fidelity(Y, A, centre=True)


def q06_1__correlation_not_squared(Y, A):
    """drops the square: s_i = R_i / sqrt(q_ii E[Y^2]) (a signed correlation)."""
    return _mutant_fidelity(Y, A, square=False)


def q06_1__sum_of_column_energies(Y, A):
    """drops 'the energy of Y itself': uses the trace of Q (sum of E[A_i^2]) for E||Y||^2, ignoring cross terms."""
    return _mutant_fidelity(Y, A, energy_of_y=False)


def q06_1__nan_for_zero_column(Y, A):
    """drops 'a zero column gets 0': divides by E[A_i^2] = 0 (NaN)."""
    return _mutant_fidelity(Y, A, zero_rule=False)


def q06_1__alpha_over_output_energy(Y, A):
    """drops alpha's denominator E[A_i^2]: divides by E[Y^2] instead."""
    return _mutant_fidelity(Y, A, alpha_over_energy=True)


# q06_2 my_delta_star(Q, kept): delta[C] = solve(Q[C, C], (Q 1)[C]) at each kept index, 0 elsewhere, shape (n,), Q's
# dtype, kept in any order, Q not modified

def q06_2__printed_typo(Q, kept):
    """drops the cross block: reads the printed Q[C,C] 1 literally, 1_C + Q[C,C]^{-1} Q[C,C] 1 (= 2 everywhere kept)."""
    idx = torch.tensor(list(kept))
    delta = torch.zeros(Q.shape[0], dtype=Q.dtype)
    delta[idx] = 1 + torch.linalg.solve(Q[idx][:, idx], Q[idx][:, idx].sum(1))
    return delta


def q06_2__no_identity_part(Q, kept):
    """drops the 1_C: returns Q[C,C]^{-1} Q[C,Cbar] 1 only (the right-hand side without the kept columns)."""
    idx = torch.tensor(list(kept))
    gone = torch.tensor([i for i in range(Q.shape[0]) if i not in set(kept)], dtype=torch.long)
    delta = torch.zeros(Q.shape[0], dtype=Q.dtype)
    delta[idx] = torch.linalg.solve(Q[idx][:, idx], Q[idx][:, gone].sum(1))
    return delta


def q06_2__kept_positions_sorted(Q, kept):
    """drops 'each value at its own index': solves in the given order but writes at the sorted indices."""
    idx = torch.tensor(list(kept))
    delta = torch.zeros(Q.shape[0], dtype=Q.dtype)
    delta[torch.tensor(sorted(kept))] = torch.linalg.solve(Q[idx][:, idx], Q.sum(1)[idx])
    return delta


def q06_2__kept_entries_only(Q, kept):
    """drops 'shape (n,)': returns only the |C| kept entries."""
    idx = torch.tensor(list(kept))
    return torch.linalg.solve(Q[idx][:, idx], Q.sum(1)[idx])


def q06_2__float32(Q, kept):
    """drops 'the dtype of Q': returns float32."""
    idx = torch.tensor(list(kept))
    delta = torch.zeros(Q.shape[0], dtype=torch.float32)
    delta[idx] = torch.linalg.solve(Q[idx][:, idx], Q.sum(1)[idx]).float()
    return delta


def q06_2__modifies_q(Q, kept):
    """drops 'do not modify Q': zeroes the removed rows and columns of Q in place first."""
    gone = [i for i in range(Q.shape[0]) if i not in set(kept)]
    idx = torch.tensor(list(kept))
    rhs = Q.sum(1)[idx]
    Q[gone] = 0
    Q[:, gone] = 0
    delta = torch.zeros(Q.shape[0], dtype=Q.dtype)
    delta[idx] = torch.linalg.solve(Q[idx][:, idx], rhs)
    return delta


# q06_3 my_bn_loss(model, x): every _BatchNorm, ||mean - rm||_2 + ||var(biased) - rv||_2 of each BN's input over every
# axis but 1, hooks removed, eval mode kept (running statistics unchanged), gradients reach x

def _mutant_bn_loss(model, x, *, kinds=None, unbiased=False, squared=False, use_output=False, remove=True,
                    train=False, detach=False, dims=None):
    kinds = kinds or (nn.modules.batchnorm._BatchNorm,)
    terms = []

    def hook(m, inputs, output):
        a = output if use_output else inputs[0]
        if detach:
            a = a.detach()
        d = dims if dims is not None else [k for k in range(a.dim()) if k != 1]
        mean_term = torch.linalg.vector_norm(a.mean(d) - m.running_mean)
        var_term = torch.linalg.vector_norm(a.var(d, unbiased=unbiased) - m.running_var)
        terms.append(mean_term ** 2 + var_term ** 2 if squared else mean_term + var_term)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    if train:
        model.train()
    model(x)
    if remove:
        for h in handles:
            h.remove()
    return torch.stack(terms).sum()


def q06_3__only_batchnorm2d(model, x):
    """drops 'every _BatchNorm': hooks nn.BatchNorm2d only (a BatchNorm1d is skipped)."""
    return _mutant_bn_loss(model, x, kinds=(nn.BatchNorm2d,))


def q06_3__unbiased_variance(model, x):
    """drops 'biased variance': var(unbiased=True)."""
    return _mutant_bn_loss(model, x, unbiased=True)


def q06_3__squared_norms(model, x):
    """drops 'norms, not squared': sums squared norms."""
    return _mutant_bn_loss(model, x, squared=True)


def q06_3__bn_outputs(model, x):
    """drops 'each BN's input': takes the statistics of the BN's output."""
    return _mutant_bn_loss(model, x, use_output=True)


def q06_3__hooks_left(model, x):
    """drops 'remove the hooks before returning'."""
    return _mutant_bn_loss(model, x, remove=False)


def q06_3__train_mode(model, x):
    """drops 'keep the model in eval mode': model.train() (the running statistics move)."""
    return _mutant_bn_loss(model, x, train=True)


def q06_3__detached(model, x):
    """drops 'gradients flow back to x': detaches the BN inputs."""
    return _mutant_bn_loss(model, x, detach=True)


def q06_3__spatial_only(model, x):
    """drops 'every axis but the channel axis': the batch mean of per-image statistics over positions only."""
    terms = []

    def hook(m, inputs, output):
        a = inputs[0]
        d = list(range(2, a.dim()))
        if not d:
            mean, var = a.mean(0), a.var(0, unbiased=False)
        else:
            mean, var = a.mean(d).mean(0), a.var(d, unbiased=False).mean(0)
        terms.append(torch.linalg.vector_norm(mean - m.running_mean) + torch.linalg.vector_norm(var - m.running_var))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model(x)
    for h in handles:
        h.remove()
    return torch.stack(terms).sum()
