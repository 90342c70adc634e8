"""A textbook Adam, written from the paper's formulas, to check with ``python -m bench.verify``.

    m_t = b1 m + (1 - b1) g          v_t = b2 v + (1 - b2) g^2
    theta_t = theta - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

``bias_correction=False`` drops the two ``1 - b^t`` factors: the classic mistake, to see
``bench.verify`` catch it at step 1.
"""

import torch


class MyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, bias_correction=True):
        defaults = dict(lr=lr, betas=betas, eps=eps, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                if group["bias_correction"]:
                    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
                else:
                    m_hat, v_hat = m, v
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
