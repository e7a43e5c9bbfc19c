"""Wrong answers to the code questions of notebook 03, one dropped requirement each (see ../test_mutants.py)."""
# ruff: noqa: F821
import torch  # for default arguments; the bodies use the notebook's names

FUNCTIONS = {"q03_1": "my_crossings", "q03_2": "my_tv", "q03_3": "my_tv_bounds"}
SETUP = ""


def _mutant_abc(mu1, var1, mu2, var2):
    a = 0.5 * (1.0 / var2 - 1.0 / var1)
    b = mu1 / var1 - mu2 / var2
    c = 0.5 * (mu2 ** 2 / var2 - mu1 ** 2 / var1) + 0.5 * math.log(var2 / var1)
    return a, b, c


# q03_1 my_crossings: roots of a x^2 + b x + c, r1 <= r2, one root and +-inf when a = 0, a tuple of two floats

def q03_1__unsorted(mu1, var1, mu2, var2):
    """drops r1 <= r2: returns the roots in the formula's order (reversed when a < 0)."""
    a, b, c = _mutant_abc(mu1, var1, mu2, var2)
    if a == 0.0:
        return -c / b, math.inf
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def q03_1__no_equal_variance_case(mu1, var1, mu2, var2):
    """drops the a = 0 case (equal variances): divides by a."""
    a, b, c = _mutant_abc(mu1, var1, mu2, var2)
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    r1, r2 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    return min(r1, r2), max(r1, r2)


def q03_1__twice_the_crossing(mu1, var1, mu2, var2):
    """drops '+-inf as the other' for equal variances: returns the one crossing twice."""
    a, b, c = _mutant_abc(mu1, var1, mu2, var2)
    if a == 0.0:
        return -c / b, -c / b
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    r1, r2 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    return min(r1, r2), max(r1, r2)


def q03_1__no_log_term(mu1, var1, mu2, var2):
    """drops the log(sigma2 / sigma1) term of c (the densities' normalising constants)."""
    a, b, _ = _mutant_abc(mu1, var1, mu2, var2)
    c = 0.5 * (mu2 ** 2 / var2 - mu1 ** 2 / var1)
    if a == 0.0:
        return -c / b, math.inf
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    r1, r2 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    return min(r1, r2), max(r1, r2)


def q03_1__returns_a_list(mu1, var1, mu2, var2):
    """drops 'a tuple of two floats': returns a list."""
    a, b, c = _mutant_abc(mu1, var1, mu2, var2)
    if a == 0.0:
        return [-c / b, math.inf]
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    r1, r2 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    return [min(r1, r2), max(r1, r2)]


# q03_2 my_tv: |[Phi1(r2) - Phi1(r1)] - [Phi2(r2) - Phi2(r1)]|, 0 for identical Gaussians, a float

def _mutant_mass(mu, var, r1, r2, scale):
    return 0.5 * (math.erf((r2 - mu) / scale(var)) - math.erf((r1 - mu) / scale(var)))


def q03_2__no_identical_case(mu1, var1, mu2, var2):
    """drops 'identical Gaussians have TV 0': calls my_crossings on them anyway."""
    r1, r2 = my_crossings(mu1, var1, mu2, var2)
    scale = lambda v: math.sqrt(2 * v)
    return abs(_mutant_mass(mu1, var1, r1, r2, scale) - _mutant_mass(mu2, var2, r1, r2, scale))


def q03_2__std_not_variance(mu1, var1, mu2, var2):
    """drops sqrt(2 sigma^2): divides by sqrt(2) * var (a variance taken for a standard deviation)."""
    if mu1 == mu2 and var1 == var2:
        return 0.0
    r1, r2 = my_crossings(mu1, var1, mu2, var2)
    scale = lambda v: math.sqrt(2) * v
    return abs(_mutant_mass(mu1, var1, r1, r2, scale) - _mutant_mass(mu2, var2, r1, r2, scale))


def q03_2__no_abs(mu1, var1, mu2, var2):
    """drops the absolute value."""
    if mu1 == mu2 and var1 == var2:
        return 0.0
    r1, r2 = my_crossings(mu1, var1, mu2, var2)
    scale = lambda v: math.sqrt(2 * v)
    return _mutant_mass(mu1, var1, r1, r2, scale) - _mutant_mass(mu2, var2, r1, r2, scale)


def q03_2__returns_a_tensor(mu1, var1, mu2, var2):
    """drops 'return a float': returns a 0-d tensor."""
    if mu1 == mu2 and var1 == var2:
        return torch.tensor(0.0, dtype=torch.float64)
    r1, r2 = my_crossings(mu1, var1, mu2, var2)
    scale = lambda v: math.sqrt(2 * v)
    return torch.tensor(abs(_mutant_mass(mu1, var1, r1, r2, scale) - _mutant_mass(mu2, var2, r1, r2, scale)),
                        dtype=torch.float64)


# q03_3 my_tv_bounds: (H^2, H sqrt(2 - H^2)), BC of 1-D Gaussians, two floats

def _mutant_bc(mu1, var1, mu2, var2):
    s1, s2 = math.sqrt(var1), math.sqrt(var2)
    return math.sqrt(2 * s1 * s2 / (var1 + var2)) * math.exp(-(mu1 - mu2) ** 2 / (4 * (var1 + var2)))


def q03_3__sqrt2_h_upper(mu1, var1, mu2, var2):
    """drops H sqrt(2 - H^2): uses the looser sqrt(2) H as the upper bound."""
    h2 = 1.0 - _mutant_bc(mu1, var1, mu2, var2)
    return h2, math.sqrt(2.0) * math.sqrt(h2)


def q03_3__h_not_h_squared(mu1, var1, mu2, var2):
    """drops the square of the lower bound: returns H."""
    h2 = 1.0 - _mutant_bc(mu1, var1, mu2, var2)
    return math.sqrt(h2), math.sqrt(h2) * math.sqrt(2.0 - h2)


def q03_3__variances_for_stds(mu1, var1, mu2, var2):
    """drops sigma = sqrt(variance) in BC's first factor: uses the variances."""
    bc = math.sqrt(2 * var1 * var2 / (var1 ** 2 + var2 ** 2)) * math.exp(-(mu1 - mu2) ** 2 / (4 * (var1 + var2)))
    h2 = 1.0 - bc
    return h2, math.sqrt(h2) * math.sqrt(2.0 - h2)


def q03_3__exponent_over_8(mu1, var1, mu2, var2):
    """drops the 1/4 of the exponent: uses (mu1 - mu2)^2 / (8 (sigma1^2 + sigma2^2))."""
    s1, s2 = math.sqrt(var1), math.sqrt(var2)
    bc = math.sqrt(2 * s1 * s2 / (var1 + var2)) * math.exp(-(mu1 - mu2) ** 2 / (8 * (var1 + var2)))
    h2 = 1.0 - bc
    return h2, math.sqrt(h2) * math.sqrt(2.0 - h2)


def q03_3__returns_tensors(mu1, var1, mu2, var2):
    """drops 'return two floats': returns 0-d tensors."""
    h2 = 1.0 - _mutant_bc(mu1, var1, mu2, var2)
    return torch.tensor(h2), torch.tensor(math.sqrt(h2) * math.sqrt(2.0 - h2))
