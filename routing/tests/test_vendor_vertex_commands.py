"""``manage.py vendor add --kind vertex``: the service-account key stored encrypted, bad options refused in one line."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from fakevendors.vertex.oauth import service_account_key
from routing.models import Vendor
from routing.tests.test_commands import manage


@pytest.mark.django_db
def test_vendor_add_vertex_stores_the_key_encrypted(tmp_path, capsys):
    info = service_account_key("https://oauth2.googleapis.com/token")
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(info))
    call_command("vendor", "add", "gcp", "--kind", "vertex", "--project", "my-proj", "--location", "europe-west4",
                 "--credentials-file", str(key_file))  # fmt: skip
    vendor = Vendor.objects.get(name="gcp")
    assert vendor.options == {"project": "my-proj", "location": "europe-west4"}
    assert vendor.credentials() == {"credentials_json": info}
    assert info["private_key"][40:80] not in vendor.credentials_encrypted
    call_command("vendor", "list")
    out = capsys.readouterr()
    assert "gcp\tvertex" in out.out and "PRIVATE KEY" not in out.out + out.err


BAD_KEYS = {
    "user": {"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"},
    "broken": {"type": "service_account", "client_email": "a@b", "token_uri": "https://oauth2.googleapis.com/token",
               "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n"},
    "plain-http": {**service_account_key("http://tokens.example.com/token")},
}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (["--location", "us-central1"], "good", "--project is required"),
        (["--project", "p"], "good", "--location is required"),
        (["--project", "p", "--location", "us-central1"], "user", "not a service-account key"),
        (["--project", "p", "--location", "us-central1"], "broken", "not a readable PEM RSA key"),
        (["--project", "p", "--location", "us-central1"], "plain-http", "must be an https URL"),
        (["--project", "p", "--location", "us-central1"], None, "needs --credentials-file"),
        (["--project", "p/../x", "--location", "us-central1"], "good", "not a valid Google Cloud project"),
    ],
)
@pytest.mark.django_db
def test_vendor_add_vertex_rejects_bad_options(tmp_path, extra, key, message):
    args = ["vendor", "add", "gcp", "--kind", "vertex", *extra]
    if key:
        info = BAD_KEYS.get(key) or service_account_key("https://oauth2.googleapis.com/token")
        (tmp_path / "key.json").write_text(json.dumps(info))
        args += ["--credentials-file", str(tmp_path / "key.json")]
    with pytest.raises(CommandError) as caught:
        call_command(*args)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
    assert not Vendor.objects.filter(name="gcp").exists()


@pytest.mark.django_db(transaction=True)
def test_vendor_add_vertex_with_a_user_credentials_file_fails_in_one_line(tmp_path):
    (tmp_path / "user.json").write_text(json.dumps(BAD_KEYS["user"]))
    result = manage("vendor", "add", "gcp", "--kind", "vertex", "--project", "p", "--location", "us-central1",
                    "--credentials-file", str(tmp_path / "user.json"))  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a service-account key (type is 'authorized_user'" in lines[0], result.stderr
