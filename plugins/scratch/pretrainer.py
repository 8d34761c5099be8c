"""No pre-training: the backbone keeps its random initialisation (seeded by the run)."""

from lmbench.interfaces import PretrainContext, Pretrainer


class Scratch(Pretrainer):
    trains = False

    def pretrain(self, context: PretrainContext):
        return None
