"""UDS online batch selection inside the training scripts people already have (docs/INTEGRATIONS.md).

    from uds.integrations import UDSConfig, UDSTrainer, UDSSFTTrainer

`UDSTrainer` needs only transformers; `UDSSFTTrainer` needs the `trl` extra and is imported on first use.
"""

from __future__ import annotations

from uds.integrations.trainer import STATE_FILE, UDSConfig, UDSMixin, UDSTrainer
from uds.order import GroupBatchSampler

__all__ = ["UDSConfig", "UDSMixin", "UDSTrainer", "UDSSFTTrainer", "GroupBatchSampler", "STATE_FILE"]


def __getattr__(name: str):
    # TRL is an optional extra: importing uds.integrations must work without it.
    if name == "UDSSFTTrainer":
        from uds.integrations.sft import UDSSFTTrainer

        return UDSSFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
