from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from fakevendors.openai import FakeOpenAI
from routing.admin_forms import OPTION_PREFIX, SECRET_PREFIX
from routing.models import RouterModel, Vendor
from routing.services import model_create, vendor_create
from routing.tests.inprocess.scripted import ScriptedAdapter
from routing.vendors import ADAPTERS

SECRET = "sk-vendor-admin-secret-0123456789"


def add_url(kind: str) -> str:
    return reverse("admin:routing_vendor_add") + f"?kind={kind}"


def vendor_post(name: str = "acme", **fields: str) -> dict[str, str]:
    return {"name": name, "base_url": "https://api.example.com/v1", "enabled": "on", **fields}


def test_adding_a_vendor_starts_by_choosing_its_kind(admin_client):
    page = admin_client.get(reverse("admin:routing_vendor_add")).content.decode()
    for kind in ADAPTERS:
        assert f"?kind={kind}" in page


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_vendor_form_has_the_fields_its_adapter_declares(admin_client, kind):
    page = admin_client.get(add_url(kind)).content.decode()
    adapter = ADAPTERS[kind]
    for name in adapter.option_names:
        assert f'name="{OPTION_PREFIX}{name}"' in page
    for name in adapter.secret_names:
        assert f'name="{SECRET_PREFIX}{name}"' in page
    others = {n for a in ADAPTERS.values() for n in a.option_names} - set(adapter.option_names)
    for name in others:
        assert f'name="{OPTION_PREFIX}{name}"' not in page


def test_vendor_credentials_are_write_only(admin_client):
    response = admin_client.post(
        add_url("openai"), vendor_post(**{"secret_api_key": SECRET, "option_organization": "org-7"})
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    vendor = Vendor.objects.get(name="acme")
    assert (vendor.kind, vendor.options, vendor.credentials()) == (
        "openai",
        {"organization": "org-7"},
        {"api_key": SECRET},
    )
    assert SECRET not in vendor.credentials_encrypted

    change_url = reverse("admin:routing_vendor_change", args=[vendor.pk])
    page = admin_client.get(change_url).content.decode()
    assert SECRET not in page
    assert "Currently set" in page
    assert "org-7" in page
    assert SECRET not in admin_client.get(reverse("admin:routing_vendor_changelist")).content.decode()

    # Blank keeps the stored secret, a typed one replaces it, "remove" clears it.
    admin_client.post(change_url, vendor_post(option_organization="org-8"))
    vendor.refresh_from_db()
    assert (vendor.options, vendor.credentials()) == ({"organization": "org-8"}, {"api_key": SECRET})
    admin_client.post(change_url, vendor_post(secret_api_key="sk-new-value-42"))
    vendor.refresh_from_db()
    assert vendor.credentials() == {"api_key": "sk-new-value-42"}
    admin_client.post(change_url, vendor_post(remove_credentials="on"))
    vendor.refresh_from_db()
    assert vendor.credentials_encrypted == ""
    assert "Currently not set" in admin_client.get(change_url).content.decode()


def field_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return {name: list(errors) for name, errors in response.context["adminform"].form.errors.items()}


def test_vendor_form_reports_what_the_adapter_rejects(admin_client):
    response = admin_client.post(add_url("openai"), vendor_post(base_url=""))
    assert field_errors(response) == {"base_url": ["Base URL is required for an OpenAI-compatible vendor"]}
    assert not Vendor.objects.exists()


def test_vendor_form_shows_every_problem_at_its_field_in_plain_words(admin_client):
    response = admin_client.post(add_url("azure"), vendor_post(base_url="", option_api_version="latest"))
    errors = field_errors(response)
    assert errors == {
        "base_url": ["Base URL is required for Azure (https://RESOURCE.openai.azure.com)"],
        "option_api_version": ["API version must look like 2024-10-21 or 2025-04-01-preview"],
        "secret_api_key": ["Azure needs exactly one of API key, Entra token or Entra client secret"],
    }
    page = response.content.decode()
    assert "--" not in " ".join(m for messages in errors.values() for m in messages)
    assert 'class="errorlist nonfield"' not in page  # nothing above the form: every error is at its field
    assert not Vendor.objects.exists()


def test_the_command_keeps_its_one_line_error_in_flags(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as raised:
        call_command("vendor", "add", "az", "--kind", "azure", "--api-version", "latest")
    assert str(raised.value) == (
        "--base-url is required for Azure (https://RESOURCE.openai.azure.com); "
        "--api-version must look like 2024-10-21 or 2025-04-01-preview; "
        "Azure needs exactly one of --api-key, --entra-token or --entra-client-secret"
    )


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_add_form_offers_the_kind_as_a_select_with_the_chosen_one(admin_client, kind):
    page = admin_client.get(add_url(kind)).content.decode()
    assert '<select name="kind"' in page
    assert f'<option value="{kind}" selected>' in page
    assert "vendor_form.js" in page  # choosing another kind loads its form


def test_change_form_shows_the_kind_read_only(admin_client):
    vendor = vendor_create("az", "azure", "https://r.openai.azure.com", credentials={"api_key": SECRET})
    page = admin_client.get(reverse("admin:routing_vendor_change", args=[vendor.pk])).content.decode()
    assert '<div class="readonly">Azure OpenAI</div>' in page
    assert 'name="kind"' not in page


def test_a_kind_chosen_on_the_add_form_decides_which_form_is_checked(admin_client):
    # The URL says openai, the select says bedrock: the vendor is a Bedrock one, judged by Bedrock's rules.
    post = vendor_post(kind="bedrock", base_url="", option_region="eu-west-1", secret_api_key="ABSK-key")
    response = admin_client.post(add_url("openai"), post)
    assert response.status_code == 302, field_errors(response)
    vendor = Vendor.objects.get(name="acme")
    assert (vendor.kind, vendor.options, vendor.credentials()) == (
        "bedrock",
        {"region": "eu-west-1"},
        {"api_key": "ABSK-key"},
    )


@pytest.mark.parametrize(
    ("kind", "shown", "not_shown"),
    [
        ("openai", "https://api.openai.com/v1", "azure.com"),
        ("azure", "https://RESOURCE.openai.azure.com", "https://api.openai.com/v1"),
        ("bedrock", "https://bedrock-runtime.REGION.amazonaws.com", "https://api.openai.com/v1"),
        ("vertex", "https://LOCATION-aiplatform.googleapis.com", "https://api.openai.com/v1"),
        ("byteplus", "https://ark.ap-southeast.bytepluses.com", "https://api.openai.com/v1"),
        ("onerouter", "https://llm.onerouter.pro/v1", "https://api.openai.com/v1"),
        ("demo", "no network requests", "https://api.openai.com/v1"),
    ],
)
def test_each_kind_shows_its_own_base_url_example(admin_client, kind, shown, not_shown):
    form = admin_client.get(add_url(kind)).context["adminform"].form
    help_text = form.fields["base_url"].help_text
    assert shown in help_text and not_shown not in help_text
    assert ADAPTERS[kind].base_url_example in help_text


def test_options_with_choices_are_selects_with_their_defaults(admin_client):
    from routing.vendors.azure import API_STYLES, STREAM_USAGE_MODES

    page = admin_client.get(add_url("azure")).content.decode()
    form_fields = admin_client.get(add_url("azure")).context["adminform"].form.fields
    assert '<select name="option_api_style"' in page and '<option value="deployment" selected>' in page
    assert '<select name="option_stream_usage"' in page and '<option value="auto" selected>' in page
    assert '<select name="option_max_tokens_field"' in page
    # One source: the adapter's declaration is what the form offers and what the command's help lists.
    assert [v for v, _ in form_fields["option_api_style"].choices] == list(API_STYLES)
    assert [v for v, _ in form_fields["option_stream_usage"].choices] == list(STREAM_USAGE_MODES)
    assert 'placeholder="2024-10-21"' in page  # a free-text option shows its default


def test_command_help_lists_the_choices_the_form_offers(capsys):
    from django.core.management import call_command

    with pytest.raises(SystemExit):
        call_command("vendor", "add", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "One of auto, on, off. Default auto." in help_text
    assert "One of deployment, v1. Default deployment." in help_text


def test_a_saved_vendor_shows_its_stored_choice(admin_client):
    vendor = vendor_create(
        "az", "azure", "https://r.openai.azure.com", {"api_style": "v1", "stream_usage": "off"}, {"api_key": SECRET}
    )
    form = admin_client.get(reverse("admin:routing_vendor_change", args=[vendor.pk])).context["adminform"].form
    assert (form["option_api_style"].value(), form["option_stream_usage"].value()) == ("v1", "off")


def test_a_typed_secret_is_not_sent_back_and_the_form_says_to_enter_it_again(admin_client):
    response = admin_client.post(add_url("openai"), vendor_post(base_url="", secret_api_key=SECRET))
    errors = field_errors(response)
    assert errors["secret_api_key"] == [
        "Enter this again: a typed secret is never sent back to the page, so it was not kept when the form had errors."
    ]
    assert SECRET not in response.content.decode()
    # Without a typed secret, nothing to say at the field.
    assert "secret_api_key" not in field_errors(admin_client.post(add_url("openai"), vendor_post(base_url="")))


def test_remove_stored_credentials_is_offered_only_when_some_are_stored(admin_client):
    assert 'name="remove_credentials"' not in admin_client.get(add_url("openai")).content.decode()
    bare = vendor_create("bare", "openai", "https://api.example.com/v1")
    keyed = vendor_create("keyed", "openai", "https://api.example.com/v1", credentials={"api_key": SECRET})
    for vendor, offered in ((bare, False), (keyed, True)):
        page = admin_client.get(reverse("admin:routing_vendor_change", args=[vendor.pk])).content.decode()
        assert ('name="remove_credentials"' in page) is offered, vendor.name
        assert ("Remove stored credentials" in page) is offered, vendor.name


def _vendor_with_model(url: str) -> Vendor:
    vendor = vendor_create("fake", "openai", url, credentials={"api_key": SECRET})
    model_create("test/fake", deployments=[(vendor, "fake-model", 0, 1)])
    return vendor


def _messages(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def test_test_connection_sends_one_tiny_request_and_reports_success(admin_client):
    with FakeOpenAI(tokens=1) as fake:
        vendor = _vendor_with_model(fake.url + "/v1")
        response = admin_client.post(
            reverse("admin:routing_vendor_changelist"), {"action": "test_connection", "_selected_action": [vendor.pk]}
        )
        [(level, message)] = _messages(response)
        assert level == "success"
        assert "fake: fake-model answered in" in message
        assert SECRET not in message
        [request] = fake.requests
        assert request.json()["max_tokens"] == 1
        assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_test_connection_reports_failure_without_the_secret(admin_client):
    # A vendor that echoes the key it was sent in its error message.
    echo = {"error": {"message": f"Bad request from key {SECRET}", "type": "invalid_request_error"}}
    with FakeOpenAI(status=400, error_body=echo) as fake:
        vendor = _vendor_with_model(fake.url + "/v1")
        response = admin_client.post(
            reverse("admin:routing_vendor_changelist"), {"action": "test_connection", "_selected_action": [vendor.pk]}
        )
    [(level, message)] = _messages(response)
    assert level == "error"
    # The vendor echoed the key; it was scrubbed before it could reach the page.
    assert "400" in message and ("from key [redacted]" in message or "from key [credential]" in message)
    assert SECRET not in message


def test_test_connection_without_a_deployment_says_so(admin_client):
    vendor = vendor_create("lonely", "demo")
    response = admin_client.post(
        reverse("admin:routing_vendor_changelist"), {"action": "test_connection", "_selected_action": [vendor.pk]}
    )
    [(level, message)] = _messages(response)
    assert level == "error" and "add a model deployed on this vendor" in message


def test_model_with_prices_and_deployment_is_added_and_toggled(admin_client):
    vendor = vendor_create("local", "demo")
    response = admin_client.post(
        reverse("admin:routing_routermodel_add"),
        {
            "name": "demo/new",
            "mode": "chat",
            "enabled": "on",
            "input_price": "0.15",
            "output_price": "0.60",
            "request_price": "0",
            "max_output_tokens": "4096",
            "deployments-TOTAL_FORMS": "1",
            "deployments-INITIAL_FORMS": "0",
            "deployments-MIN_NUM_FORMS": "0",
            "deployments-MAX_NUM_FORMS": "1000",
            "deployments-0-vendor": str(vendor.pk),
            "deployments-0-upstream_model": "echo",
            "deployments-0-priority": "0",
            "deployments-0-weight": "1",
            "deployments-0-enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    model = RouterModel.objects.get(name="demo/new")
    assert (model.input_price, model.output_price) == (Decimal("0.15"), Decimal("0.60"))
    assert [(d.vendor.name, d.upstream_model) for d in model.deployments.all()] == [("local", "echo")]

    url = reverse("admin:routing_routermodel_changelist")
    admin_client.post(url, {"action": "disable_models", "_selected_action": [model.pk]})
    model.refresh_from_db()
    assert not model.enabled
    admin_client.post(url, {"action": "enable_models", "_selected_action": [model.pk]})
    model.refresh_from_db()
    assert model.enabled


def _model_form(name: str, mode: str, vendor: Vendor) -> dict[str, str]:
    return {
        "name": name, "mode": mode, "enabled": "on", "input_price": "0.02", "output_price": "0",
        "request_price": "0", "max_output_tokens": "4096",
        "deployments-TOTAL_FORMS": "1", "deployments-INITIAL_FORMS": "0", "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000", "deployments-0-vendor": str(vendor.pk),
        "deployments-0-upstream_model": "embed", "deployments-0-priority": "0", "deployments-0-weight": "1",
        "deployments-0-enabled": "on",
    }  # fmt: skip


def test_an_embedding_model_is_added_and_listed_with_its_mode(admin_client):
    vendor = vendor_create("local", "demo")
    response = admin_client.post(reverse("admin:routing_routermodel_add"), _model_form("demo/vec", "embedding", vendor))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert RouterModel.objects.get(name="demo/vec").mode == "embedding"
    listing = admin_client.get(reverse("admin:routing_routermodel_changelist") + "?mode__exact=embedding")
    assert "demo/vec" in listing.content.decode() and "Embedding" in listing.content.decode()


def test_an_embedding_model_on_a_kind_without_embeddings_is_refused(admin_client, monkeypatch):
    monkeypatch.setitem(ADAPTERS, ScriptedAdapter.kind, ScriptedAdapter)
    vendor = Vendor.objects.create(name="scripted", kind=ScriptedAdapter.kind)
    response = admin_client.post(reverse("admin:routing_routermodel_add"), _model_form("x/vec", "embedding", vendor))
    assert response.status_code == 200
    assert "serves no embeddings" in response.content.decode()
    assert not RouterModel.objects.filter(name="x/vec").exists()


def test_every_admin_action_declares_the_permission_it_needs():
    from django.contrib import admin

    undeclared = [
        f"{model._meta.label}.{name}"
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in {"billing", "routing", "auth"}
        for func, name, _ in model_admin._get_base_actions()
        if not getattr(func, "allowed_permissions", None)
    ]
    assert undeclared == []


@pytest.fixture
def viewer_client(client, django_user_model):
    """A staff user who may only view vendors and models."""
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_vendor", "view_routermodel"]))
    client.force_login(viewer)
    return client


def test_view_only_staff_are_neither_offered_nor_can_post_vendor_and_model_actions(viewer_client):
    with FakeOpenAI(tokens=1) as fake:
        _vendor_with_model(fake.url + "/v1")
        off_vendor = vendor_create("off", "demo")
        off_model = model_create("test/off", deployments=[(off_vendor, "echo", 0, 1)])
        Vendor.objects.filter(pk=off_vendor.pk).update(enabled=False)
        RouterModel.objects.filter(pk=off_model.pk).update(enabled=False)
        cases = [
            ("admin:routing_vendor_changelist", Vendor, ["test_connection", "disable_vendors", "enable_vendors"]),
            ("admin:routing_routermodel_changelist", RouterModel, ["disable_models", "enable_models"]),
        ]
        for url_name, model_class, actions in cases:
            url = reverse(url_name)
            before = dict(model_class.objects.values_list("pk", "enabled"))
            for action in actions:
                viewer_client.post(url, {"action": action, "_selected_action": list(before), "index": "0"})
                assert dict(model_class.objects.values_list("pk", "enabled")) == before, action
            page = viewer_client.get(url)
            assert page.status_code == 200
            assert not any(action in page.content.decode() for action in actions), url_name
        assert fake.requests == []  # no connection test ran
