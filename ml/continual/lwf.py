"""Learning without Forgetting: distil the previous model's outputs into the new one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ml.config import LwFConfig
from ml.continual.base import Plugin

_OUTPUT_KEY = {"regression": "value", "forecasting": "forecast", "anomaly": "prediction"}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) on temperature-softened distributions; zero when equal."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * t * t


class LwFPlugin(Plugin):
    """Uses ``trainer.previous_model`` (the ``--init`` checkpoint) as teacher. For
    classification only the old classes' logits are distilled; other tasks match outputs."""

    name = "lwf"

    def __init__(self, cfg: LwFConfig):
        self.cfg = cfg

    def before_backward(self, trainer, inputs, outputs, n_new):
        teacher = trainer.previous_model
        if teacher is None:
            return None
        with torch.no_grad(), trainer.autocast():
            t_out, _ = teacher(inputs, trainer.task)
        trainer.forward_only_samples += int(inputs["sensor"].shape[0])
        if trainer.task == "classification":
            k_old = teacher.cfg.n_classes
            return self.cfg.alpha * distillation_loss(outputs["logits"][:, :k_old], t_out["logits"], self.cfg.temperature)
        key = _OUTPUT_KEY[trainer.task]
        return self.cfg.alpha * F.mse_loss(outputs[key].float(), t_out[key].float())
