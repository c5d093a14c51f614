"""What a probe costs, and the Hessian sample that fits a budget (method.md [S9]).

The unit is the example-gradient: a forward and a backward of one example, what one training
step of batch B spends B of. The minibatch gradients cost one per example of the sample, and a
Hessian-vector product on n examples costs EXAMPLE_GRADIENTS_PER_HVP·n (a convention: the
benchmark measured one product at 1.5-3.1 gradients, bench/RESULTS.md). With --steps S, the
training run spends S·B, and --probe-budget f cuts the Hessian's examples to the whole
minibatches at which the planned products cost at most f·S·B with the gradients (where the
budget applies: Config.budget).
"""

from __future__ import annotations

from thermocal.records import MIN_TRACE_PROBES, ProbeCost

EXAMPLE_GRADIENTS_PER_HVP = 2

__all__ = ["EXAMPLE_GRADIENTS_PER_HVP", "budget_examples", "cost", "example_gradients", "planned_products"]


def example_gradients(gradient_examples: int, hessian_examples: int, hvps: int) -> int:
    """The gradients' examples plus EXAMPLE_GRADIENTS_PER_HVP per Hessian example and product."""
    return gradient_examples + EXAMPLE_GRADIENTS_PER_HVP * hvps * hessian_examples


def planned_products(lanczos_steps: int, deviations: int, trace: bool = True, heldout: bool = False) -> int:
    """The default route's fewest products: Lanczos's steps and the residual of its top pair ([H7],
    [H12]), the trace's minimum probes where it is measured ([H8]), lambda_max's sampling error
    ([H13]), the noise curvature's deviations and mean gradient ([N8]), and with `heldout` the
    held-out quotient a subsample takes ([H16]). Slower convergence, --density or --per-layer cost
    more (the routes that resolve lambda_min are not budgeted, Config.budget)."""
    return lanczos_steps + 1 + (MIN_TRACE_PROBES if trace else 0) + 1 + deviations + 1 + (1 if heldout else 0)


def budget_examples(budget: float, steps: int, batch_size: int, gradient_examples: int, products: int) -> int:
    """The most whole minibatches of Hessian examples whose `products` cost, with the
    `gradient_examples`, at most `budget`·steps·batch_size example-gradients; never fewer than
    one minibatch (the probe then costs more than the budget, and says so)."""
    left = budget * steps * batch_size - gradient_examples
    per_minibatch = EXAMPLE_GRADIENTS_PER_HVP * products * batch_size
    return batch_size * max(1, int(left // per_minibatch))


def cost(gradient_examples: int, hessian_examples: int, hvps: int, planned_hvps: int, steps: int | None,
         batch_size: int, budget: float | None, gauss_newton: int | None = None) -> ProbeCost:
    """The probe's cost record; the fraction of the training run with --steps, and the budget where it
    applied. `gauss_newton`: the Gauss-Newton trace's example-gradients, where it was measured ([H15])."""
    spent = example_gradients(gradient_examples, hessian_examples, hvps) + (gauss_newton or 0)
    training = steps * batch_size if steps else None
    return ProbeCost(example_gradients=spent, gradient_examples=gradient_examples, hessian_examples=hessian_examples,
                     hvps=hvps, planned_hvps=planned_hvps, training_example_gradients=training,
                     fraction=spent / training if training else None, budget=budget,
                     gauss_newton_example_gradients=gauss_newton)
