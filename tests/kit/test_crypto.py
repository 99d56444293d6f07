import pytest
from cryptography.fernet import Fernet

from kit import crypto


@pytest.fixture(autouse=True)
def _fresh_keys(monkeypatch: pytest.MonkeyPatch):
    crypto._box.cache_clear()
    yield
    crypto._box.cache_clear()


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    stored = crypto.encrypt("client-secret-123")
    assert "client-secret-123" not in stored
    assert crypto.decrypt(stored) == "client-secret-123"


def test_rotated_keys_still_open_old_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("RAYDECK_ENCRYPTION_KEYS", old)
    stored_with_old = crypto.encrypt("s3cret")
    crypto._box.cache_clear()
    monkeypatch.setenv("RAYDECK_ENCRYPTION_KEYS", f"{new},{old}")
    assert crypto.decrypt(stored_with_old) == "s3cret"
    crypto._box.cache_clear()
    monkeypatch.setenv("RAYDECK_ENCRYPTION_KEYS", new)
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(stored_with_old)
