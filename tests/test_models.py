"""models.py: nothing is fetched from a model hub unless the caller opts in (audit issue 19, item 1)."""

import socket
import time

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.models import load_model

MADE_UP_HUB_ID = "soft2hard-audit-nobody/no-such-model-19"


class Refused(Exception):
    """Raised by the spied model loader, so that nothing after it runs."""


def spy_from_pretrained(monkeypatch) -> list:
    """Record the keyword arguments of every from_pretrained call (tokenizer, then model; the model refuses)."""
    import transformers

    calls = []

    def tokenizer(*args, **kwargs):
        calls.append(("tokenizer", kwargs))
        return object()

    def model(*args, **kwargs):
        calls.append(("model", kwargs))
        raise Refused

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    return calls


@pytest.mark.parametrize("allow_download", [False, True])
def test_every_from_pretrained_gets_local_files_only(monkeypatch, allow_download):
    calls = spy_from_pretrained(monkeypatch)
    kwargs = {"allow_download": True} if allow_download else {}  # the default must be offline
    with pytest.raises(Refused):
        load_model(MADE_UP_HUB_ID, device="cpu", **kwargs)
    assert [kind for kind, _ in calls] == ["tokenizer", "model"]
    assert all(kw.get("local_files_only") is (not allow_download) for _, kw in calls), calls


def test_unknown_hub_id_is_a_quick_one_line_error_without_network(monkeypatch):
    """With HF_HUB_OFFLINE unset (the Python API, not the CLI), a hub id the cache lacks never opens a socket
    (local_files_only alone still lets huggingface_hub fetch its user-agent registry from huggingface.co)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import, so undo it too
    connects = []

    def no_network(self, address, *args):
        connects.append(address)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **kw: no_network(None, address))
    start = time.monotonic()
    with pytest.raises(Soft2HardError) as err:
        load_model(MADE_UP_HUB_ID, device="cpu")
    assert time.monotonic() - start < 30
    assert connects == []
    message = str(err.value)
    assert len(message.splitlines()) == 1 and MADE_UP_HUB_ID in message and "nothing is downloaded" in message
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # the offline switch is only held during the load
