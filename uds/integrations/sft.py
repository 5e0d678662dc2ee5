"""UDS inside TRL's `SFTTrainer` (the `trl` extra): the same mixin as `UDSTrainer`, on TRL's data preparation.

SFTTrainer tokenizes the dataset (chat messages, prompt/completion or text) and builds `labels` in `__init__`, so
the group lengths are read after it; its collator pads to the right. Packing and padding-free batches put several
examples in one row, where a group of B examples no longer exists: they are refused.
"""

from __future__ import annotations

from trl import SFTTrainer

from uds.integrations.trainer import UDSMixin


class UDSSFTTrainer(UDSMixin, SFTTrainer):  # type: ignore[misc]  # as UDSTrainer
    """`trl.SFTTrainer` with UDS online batch selection: `UDSSFTTrainer(model=..., args=sft_config, uds=UDSConfig(...))`."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args")
        if config is not None and (getattr(config, "packing", False) or getattr(config, "padding_free", False)):
            raise ValueError("UDS selects among whole examples: set packing=False and padding_free=False")
        super().__init__(*args, **kwargs)
