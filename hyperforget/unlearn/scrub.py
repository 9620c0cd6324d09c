"""SCRUB (Kurmanji et al., NeurIPS 2023, arXiv 2302.09880; meghdadk/SCRUB).

Teacher = θ0 (a frozen copy), student starts at θ0. Each epoch: if it is one of the first `max_steps`
("msteps") epochs, one pass of max-steps over D_f that maximise KL(teacher ‖ student); then one pass of
min-steps over D_r minimising α · KL(teacher ‖ student) + γ · CE. The KL is the authors' DistillKL:
softened by temperature T and scaled by T². Loss weights, T, SGD momentum 0.9 and weight decay 5e-4
follow the authors' code (γ = 0.99, α = 0.001, T = 4). lr 3e-3 and 20 epochs with 5 msteps are ours,
measured on digits class 3 (64→10→10 MLP, request seeds 0-3): forget test acc 0, retained test acc
0.938-0.953 (retrain ≈ 0.954). The max-steps are unbounded (KL ascent from KL = 0), so SCRUB is
knife-edge here: lr 1e-3 leaves the class (forget acc 0.84-0.97), lr 1e-2 with 5 msteps collapses the
model (retained acc 0.17-0.25). The authors' step lr decay (×0.1 at epochs 3, 5, 9) and the "rewind"
checkpoint selection are not implemented. Runs on random subsets unchanged (on a 10% subset of digits
it leaves D_f accuracy at 1.0: the max-steps barely move a model that generalises to D_f anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyperforget.base.progress import progress
from hyperforget.config.options import ScrubOptions
from hyperforget.models.train import batch_order
from hyperforget.unlearn.method import Timer, UnlearnInputs, UnlearnResult, working_copy


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) of the T-softened distributions, batch mean, × T² (Hinton et al.)."""
    log_s = F.log_softmax(student_logits / temperature, 1)
    log_t = F.log_softmax(teacher_logits / temperature, 1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature**2


def run(inputs: UnlearnInputs, opts: ScrubOptions) -> UnlearnResult:
    teacher = working_copy(inputs.original).requires_grad_(False)
    student = working_copy(inputs.original)
    xf, xr, yr = inputs.x_forget, inputs.x_retain, inputs.y_retain
    max_steps = min_steps = 0
    with Timer() as timer:
        gen = torch.Generator().manual_seed(inputs.seed)
        with torch.no_grad():
            t_forget, t_retain = teacher(xf), teacher(xr)
        opt = torch.optim.SGD(student.parameters(), lr=opts.lr, momentum=opts.momentum,
                              weight_decay=opts.weight_decay)
        for epoch in progress(range(opts.epochs), "scrub"):
            if epoch < opts.max_steps:
                for idx in batch_order(len(xf), opts.forget_batch_size, gen):
                    opt.zero_grad(set_to_none=True)
                    (-distill_kl(student(xf[idx]), t_forget[idx], opts.temperature)).backward()
                    opt.step()
                    max_steps += 1
            for idx in batch_order(len(yr), opts.batch_size, gen):
                logits = student(xr[idx])
                loss = opts.gamma * F.cross_entropy(logits, yr[idx]) \
                    + opts.alpha * distill_kl(logits, t_retain[idx], opts.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                min_steps += 1
    info = {"max_steps_taken": max_steps, "min_steps_taken": min_steps}
    return UnlearnResult(student.eval(), "scrub", timer.seconds, max_steps + min_steps, opts.model_dump(), info=info)
