"""new_text(): the agent's new text from the reply layouts of real clients.

Every fixture text below is our own: the header and quote layouts of Gmail,
Outlook (desktop and web), Apple Mail, Thunderbird, mobile clients, Yandex and
Mail.ru, in English, Russian, German, French and Spanish; mailbot's marker line
quoted, unquoted and re-wrapped; signatures; and text that only looks like a
header or a signature and must stay.
"""

from __future__ import annotations

import time

import pytest

from mailbot.replytext import MARKER, ReplyText, new_text

ANSWER = "Please restart the printer and try again.\nIt should work now."

#: (id, body, expected text): every body has the agent's ANSWER on top.
TOP_POSTED = [
    (
        "gmail",
        f"{ANSWER}\n\nOn Mon, Mar 4, 2030 at 9:00 AM Support <help@example.com> wrote:\n\n"
        "> Hello, the printer on floor 3 does not print.\n",
    ),
    (
        "gmail-header-on-two-lines",
        f"{ANSWER}\n\nOn Mon, Mar 4, 2030 at 9:00 AM Anna Petrova from the Accounting <\n"
        "anna.petrova@accounting.example.com> wrote:\n\n> Hello\n",
    ),
    (
        "gmail-header-on-three-lines",
        f"{ANSWER}\n\nOn Mar 4, 2030,\nat 09:00,\nAnna <anna@example.com> wrote:\n\n> Hello\n",
    ),
    (
        "gmail-address-bracket-wrapped",
        f"{ANSWER}\n\nma. 4. mar. 2030 kl. 09:00 skrev Anna <anna@example.com\n>:\n\n> Hello\n",
    ),
    (
        "outlook-desktop",
        f"{ANSWER}\n\n-----Original Message-----\nFrom: Support <help@example.com>\n"
        "Sent: Monday, March 4, 2030 9:00 AM\nTo: Bob <bob@example.com>\n"
        "Subject: [#7] Printer\n\nHello, the printer does not print.\n",
    ),
    (
        "outlook-underscore-line",
        f"{ANSWER}\n\n________________________________\nFrom: Support <help@example.com>\n"
        "Sent: Monday, March 4, 2030 9:00:12 AM\nTo: Bob\nSubject: [#7] Printer\n\nHello\n",
    ),
    (
        "outlook-web-no-separator",
        f"{ANSWER}\n\nFrom: Support <help@example.com>\nSent: 04 March 2030 09:00\n"
        "To: Bob Builder <bob@example.com>\nCc: Anna <anna@example.com>\nSubject: Printer\n\nHi\n",
    ),
    (
        "outlook-from-wrapped",
        f"{ANSWER}\n\nFrom: Human Resources\n<a-really-long-automated-address@example.com>\n"
        "Sent: Monday, March 4, 2030 9:00 AM\nTo: Bob\nSubject: Printer\n\nHi\n",
    ),
    (
        "outlook-bold-headers",
        f"{ANSWER}\n\n*From:* Support [mailto:help@example.com]\n*Sent:* Monday, March 4, 2030\n"
        "*To:* bob@example.com\n*Subject:* Printer\n\nHi\n",
    ),
    (
        "apple-mail",
        f"{ANSWER}\n\n> On 4 Mar 2030, at 09:00, Support <help@example.com> wrote:\n>\n> Hello\n",
    ),
    (
        "thunderbird",
        f"{ANSWER}\n\nOn 04.03.30 09:00, Support wrote:\n> Hello\n",
    ),
    (
        "zoho",
        f"{ANSWER}\n\n---- On Mon, 04 Mar 2030 09:00:00 +0100 help@example.com wrote ----\n\nHi\n",
    ),
    (
        "forwarded-message",
        f"{ANSWER}\n\n---------- Forwarded message ---------\nFrom: Anna <anna@example.com>\n"
        "Date: Mon, Mar 4, 2030 at 9:00 AM\nSubject: Printer\n\nHello\n",
    ),
    (
        "plain-quote-no-header",
        f"{ANSWER}\n\n> Hello, the printer on floor 3 does not print.\n> Anna\n",
    ),
    # Russian
    (
        "ru-outlook",
        f"{ANSWER}\n\nОт: Support <help@example.com>\nОтправлено: 4 марта 2030 г. 9:00\n"
        "Кому: Боб <bob@example.com>\nТема: [#7] Принтер\n\nЗдравствуйте\n",
    ),
    (
        "ru-pishet",
        f"{ANSWER}\n\n4 марта 2030 г., в 9:00, Support <help@example.com> пишет:\n> Здравствуйте\n",
    ),
    (
        "ru-yandex",
        f'{ANSWER}\n\n04.03.2030, 09:00, "Support" <help@example.com>:\n> Здравствуйте\n',
    ),
    (
        "ru-gmail",
        f"{ANSWER}\n\nпн, 4 мар. 2030\u202fг. в 09:00, Support <help@example.com>:\n\n> Привет\n",
    ),
    (
        "ru-mail-ru",
        f"{ANSWER}\n\nПонедельник, 4 марта 2030, 9:00 +03:00 от Support <help@example.com>:\n"
        "\nЗдравствуйте\n",
    ),
    (
        "ru-android",
        f'{ANSWER}\n04.03.2030 9:00 пользователь "Support" <\nhelp@example.com> написал:\n\n> Hi\n',
    ),
    (
        "ru-original-message",
        f"{ANSWER}\n\n-----Исходное сообщение-----\nОт: Support\nКому: Боб\nТема: Принтер\n",
    ),
    # German
    (
        "de-gmail",
        f"{ANSWER}\n\nAm Mo., 4. März 2030 um 09:00 Uhr schrieb Support <help@example.com>:\n"
        "\n> Hallo\n",
    ),
    (
        "de-thunderbird",
        f"{ANSWER}\n\nAm 04.03.30 um 09:00 schrieb Support:\n> Hallo\n",
    ),
    (
        "de-outlook",
        f"{ANSWER}\n\nVon: Support <help@example.com>\nGesendet: Montag, 4. März 2030 09:00\n"
        "An: Bob <bob@example.com>\nBetreff: Drucker\n\nHallo\n",
    ),
    (
        "de-original-message",
        f"{ANSWER}\n\n-----Ursprüngliche Nachricht-----\nVon: Support\nAn: Bob\nBetreff: X\n",
    ),
    # French
    (
        "fr-gmail",
        f"{ANSWER}\n\nLe lun. 4 mars 2030 à 09:00, Support <help@example.com> a écrit :\n"
        "\n> Bonjour\n",
    ),
    (
        "fr-gmail-on-two-lines",
        f"{ANSWER}\n\nLe lun. 4 mars 2030 à 09:00, Support <help@example.com>\na écrit :\n"
        "\n> Bonjour\n",
    ),
    (
        "fr-outlook",
        f"{ANSWER}\n\nDe : Support <help@example.com>\nEnvoyé : lundi 4 mars 2030 09:00\n"
        "À : Bob <bob@example.com>\nObjet : Imprimante\n\nBonjour\n",
    ),
    (
        "fr-yahoo-indented",
        f"{ANSWER}\n\n      De : Support <help@example.com>\n À : Bob <bob@example.com>\n"
        " Envoyé le : Lundi 4 mars 2030 9h00\n Objet : Re: Imprimante\n\nBonjour\n",
    ),
    # Spanish
    (
        "es-gmail",
        f"{ANSWER}\n\nEl lun, 4 mar 2030 a las 9:00, Support (<help@example.com>) escribió:\n"
        "\n> Hola\n",
    ),
    (
        "es-outlook",
        f"{ANSWER}\n\nDe: Support <help@example.com>\nEnviado: lunes, 4 de marzo de 2030 9:00\n"
        "Para: Bob <bob@example.com>\nAsunto: Impresora\n\nHola\n",
    ),
    # mailbot's marker
    (
        "marker-unquoted",
        f"{ANSWER}\n\n{MARKER}\n\nTicket 7 is assigned to you.\n",
    ),
    (
        "marker-quoted-without-header",
        f"{ANSWER}\n\n> {MARKER}\n> Ticket 7 is assigned to you.\n",
    ),
    (
        "marker-doubly-quoted",
        f"{ANSWER}\n\n> > {MARKER}\n> > Ticket 7\n",
    ),
    (
        "marker-rewrapped",
        f"{ANSWER}\n\n-- Reply above\nthis line / Отвечайте выше этой строки --\nTicket 7\n",
    ),
    (
        "marker-respaced",
        f"{ANSWER}\n\n--  Reply  above this   line /  Отвечайте выше этой строки  --\nTicket 7\n",
    ),
    (
        "marker-russian-half-only",
        f"{ANSWER}\n\nОтвечайте выше этой строки\nЗаявка 7\n",
    ),
    (
        "marker-nbsp-from-html",
        f"{ANSWER}\n\n-- Reply\u00a0above this\u00a0line / Отвечайте выше этой строки --\n"
        "Ticket 7\n",
    ),
]


@pytest.mark.parametrize(("body"), [body for _, body in TOP_POSTED], ids=[i for i, _ in TOP_POSTED])
def test_top_posted_reply_keeps_only_the_answer(body: str) -> None:
    result = new_text(body)
    assert result.text == ANSWER
    assert result.quoted
    assert result.signature == ""


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_other_line_endings(newline: str) -> None:
    body = f"{ANSWER}\n\nOn Mon, Mar 4, 2030 at 9:00 AM Support <help@example.com> wrote:\n> Hi\n"
    assert new_text(body.replace("\n", newline)).text == ANSWER


#: (id, body, expected text, expected signature)
SIGNATURES = [
    ("rfc3676", f"{ANSWER}\n\n-- \nBob Builder\nSupport team\n", ANSWER,
     "--\nBob Builder\nSupport team"),
    ("bare-dashes", f"{ANSWER}\n--\nBob\n", ANSWER, "--\nBob"),
    ("iphone", f"{ANSWER}\n\nSent from my iPhone\n", ANSWER, "Sent from my iPhone"),
    ("blackberry", f"{ANSWER}\n\nSent from my Verizon Wireless BlackBerry\n", ANSWER,
     "Sent from my Verizon Wireless BlackBerry"),
    ("outlook-ios", f"{ANSWER}\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n", ANSWER,
     "Get Outlook for iOS<https://aka.ms/o0ukef>"),
    ("outlook-android-de", f"{ANSWER}\n\nGesendet von Outlook für Android<https://aka.ms/x>\n",
     ANSWER, "Gesendet von Outlook für Android<https://aka.ms/x>"),
    ("iphone-de", f"{ANSWER}\n\nVon meinem iPhone gesendet\n", ANSWER,
     "Von meinem iPhone gesendet"),
    ("iphone-fr", f"{ANSWER}\n\nEnvoyé de mon iPhone\n", ANSWER, "Envoyé de mon iPhone"),
    ("iphone-es", f"{ANSWER}\n\nEnviado desde mi iPhone\n", ANSWER, "Enviado desde mi iPhone"),
    ("iphone-ru", f"{ANSWER}\n\nОтправлено с iPhone\n", ANSWER, "Отправлено с iPhone"),
    ("mail-ru-app", f"{ANSWER}\n\nОтправлено из мобильной Почты Mail.ru\n", ANSWER,
     "Отправлено из мобильной Почты Mail.ru"),
    ("signature-and-footer", f"{ANSWER}\n\n-- \nBob\n\nSent from my iPhone\n", ANSWER,
     "--\nBob\n\nSent from my iPhone"),
    ("mailing-list-footer", f"{ANSWER}\n\n__\nusers mailing list\nusers@lists.example.com\n",
     ANSWER, "__\nusers mailing list\nusers@lists.example.com"),
    # Kept: a sign-off is the agent's text (desk.strip_sign_off knows the agent's name).
    ("sign-off-kept", f"{ANSWER}\n\nBest regards,\nBob", f"{ANSWER}\n\nBest regards,\nBob", ""),
    ("em-dash-kept", f"{ANSWER}\n\n—\nBob", f"{ANSWER}\n\n—\nBob", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "text", "signature"),
    [case[1:] for case in SIGNATURES],
    ids=[case[0] for case in SIGNATURES],
)
def test_signatures(body: str, text: str, signature: str) -> None:
    result = new_text(body)
    assert (result.text, result.signature) == (text, signature)
    assert not result.quoted


def test_mobile_footer_above_the_quote_is_the_signature() -> None:
    body = (
        f"{ANSWER}\n\nSent from my iPhone\n\n"
        "> On 4 Mar 2030, at 09:00, Support <help@example.com> wrote:\n>\n> Hi\n"
    )
    assert new_text(body) == ReplyText(ANSWER, True, "Sent from my iPhone")


def test_mobile_footer_then_the_quoted_mail_without_header() -> None:
    body = f"{ANSWER}\n\nSent from my Galaxy\n\nHello, the printer does not print.\n"
    assert new_text(body) == ReplyText(ANSWER, True, "Sent from my Galaxy")


def test_signature_above_the_quote() -> None:
    body = f"{ANSWER}\n\n-- \nBob Builder\n\nOn 04.03.30 09:00, Support wrote:\n> {MARKER}\n"
    assert new_text(body) == ReplyText(ANSWER, True, "--\nBob Builder")


#: Text that looks like a header, a quote or a signature and must stay whole.
NOT_CUT = [
    ("on-in-prose", "On the other hand, we could wait.\nOn average it takes 2 days."),
    ("wrote-in-url", "See https://example.com/on-2024-someone-wrote-this:"),
    ("from-in-prose", "It comes from: our database, not From: the web.\nSent: never."),
    ("opening-hours", "Our hours:\nFrom: 9:00\nTo: 18:00\nDate: every weekday"),
    ("q-and-a", "Q: Does it print?\nA: Not yet.\nDe: nothing"),
    ("timestamps", "Logs:\n2030-03-04 09:00:01\n04.03.2030 09:00\nMar 4, 2030 at 9:00 AM"),
    ("sent-from-sentence", "Sent from my desk, which is easier than my phone."),
    ("sent-from-in-line", "The alert was sent from my iPhone app to all users."),
    ("sent-from-lowercase", "Sent from our office in Berlin"),
    ("dashes-mid-line", "Here is a fix -- not a signature.\nkthxbai"),
    ("markdown-rules", "## Points\n----\n1. Faster\n\n----\nDone.\n\n====\nEnd."),
    ("code-block", "The code:\n```\n--\n> not a quote\nSent from my iPhone\n```\nThat is all."),
    ("dash-list", "Points:\n-- first\n-- second\n\nThanks!"),
    ("original-message-in-prose", "The original message was lost."),
    ("colon-without-date", "I wanted to answer your points:\n\nFirst, yes."),
]


@pytest.mark.parametrize(("body"), [body for _, body in NOT_CUT], ids=[i for i, _ in NOT_CUT])
def test_lookalikes_are_kept(body: str) -> None:
    assert new_text(body) == ReplyText(body, False, "")


def test_bottom_posted_reply() -> None:
    body = "On 04.03.30 09:00, Support wrote:\n> Hello, it does not print.\nRestart it, please.\n"
    assert new_text(body) == ReplyText("Restart it, please.", True, "")


def test_inline_answers_are_kept_without_the_quotes() -> None:
    body = (
        "Hi Anna,\n\nOn Mon, Mar 4, 2030 at 9:00 AM Anna <anna@example.com> wrote:\n"
        "> Does it print?\n\nNot yet.\n\n> When?\n> Today?\n\nTomorrow morning.\n\n"
        "> Anna\n"
    )
    assert new_text(body).text == "Hi Anna,\n\nNot yet.\n\nTomorrow morning."


def test_inline_answer_needs_a_blank_line_after_the_quote() -> None:
    # A quoted line the client wrapped without its "> " is not an answer.
    body = "Yes.\n\nOn 04.03.30 09:00, Anna wrote:\n> a long quoted line that the client\nwrapped\n"
    assert new_text(body).text == "Yes."


def test_unquoted_history_below_a_header_is_not_an_answer() -> None:
    # HTML mail turned into text: the quoted mail has no "> ".
    body = f"{ANSWER}\n\nOn Mon, Mar 4, 2030 at 9:00 AM Anna <a@example.com> wrote:\n\nHello!\n"
    assert new_text(body).text == ANSWER


def test_nothing_below_the_quoted_marker_counts() -> None:
    body = f"On 04.03.30 09:00, Support wrote:\n> {MARKER}\n> Ticket 7\n\nBelow the marker.\n"
    assert new_text(body) == ReplyText("", True, "")


@pytest.mark.parametrize(
    "body",
    [
        "On Mon, Mar 4, 2030 at 9:00 AM Support <help@example.com> wrote:\n> Hello\n",
        "> Hello\n> there\n",
        f"{MARKER}\nTicket 7\n",
        "From: Support <help@example.com>\nSent: Monday\nTo: Bob\nSubject: X\n\nHello\n",
        "",
        "\n\n  \n",
    ],
    ids=["attribution", "quote", "marker", "outlook", "empty", "blank"],
)
def test_only_history_gives_no_text(body: str) -> None:
    assert new_text(body).text == ""


def test_a_lone_signature_is_kept_as_text() -> None:
    # Stripping would leave nothing: what the agent wrote stays.
    body = "--\nPlease close the ticket.\n\nOn 04.03.30 09:00, Support wrote:\n> Hi\n"
    assert new_text(body) == ReplyText("--\nPlease close the ticket.", True, "")


def test_a_lone_mobile_footer_is_no_text() -> None:
    body = "Sent from my iPhone\n\nOn 04.03.30 09:00, Support wrote:\n> Hi\n"
    assert new_text(body) == ReplyText("", True, "Sent from my iPhone")


def test_text_is_trimmed_but_keeps_its_layout() -> None:
    body = "\n\n  Hello,  \n\n    indented code\n\n\n\nOn 04.03.30 09:00, Support wrote:\n> Hi\n"
    assert new_text(body).text == "  Hello,\n\n    indented code"


def test_marker_is_one_line_that_names_both_languages() -> None:
    assert "\n" not in MARKER
    assert "Reply above this line" in MARKER
    assert "Отвечайте выше этой строки" in MARKER
    assert new_text(MARKER).text == ""


def test_unclosed_code_fence_does_not_hide_the_quote() -> None:
    body = "Use ``` for code.\n```\nstill text\n\nOn 04.03.30 09:00, Support wrote:\n> Hi\n"
    assert new_text(body).text == "Use ``` for code.\n```\nstill text"


def test_large_body_is_fast() -> None:
    body = "\n".join(f"Line {i}: 04.03.2030 09:00 <a{i}@example.com>" for i in range(20_000))
    started = time.perf_counter()
    new_text(body + "\n\nOn 04.03.30 09:00, Support wrote:\n> Hi\n")
    assert time.perf_counter() - started < 2
