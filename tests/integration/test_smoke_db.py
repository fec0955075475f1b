from mailbot.store import inbox


def test_accept_dedupes(db):
    raw = b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody\r\n"
    first = inbox.accept(db, raw, source="smtp")
    again = inbox.accept(db, raw, source="smtp")
    assert not first.duplicate
    assert again.duplicate
    assert again.inbound_id == first.inbound_id
