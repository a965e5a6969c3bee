"""The vendor admin form, built from the adapter of the vendor's kind.

Each adapter declares ``option_names`` (plain settings kept in ``Vendor.options``) and
``secret_names`` (kept encrypted); the form gets one field per name, so a new vendor kind
needs no admin change. Options the adapter declares choices for (``option_specs``) are
selects with their default; the base URL's help is the kind's own (``base_url_example``).
The adapter's ``problems()`` reports every problem at once, each at its field, in the same
words ``manage.py vendor`` uses, with settings named for people rather than as flags.

Secrets are write-only: never rendered (not even back into a form that has errors), shown
as set / not set, kept when left blank, replaced when typed, removed with "Remove stored
credentials" (offered only when some are stored). A secret typed into a form that comes back
with errors is not kept: its field says to enter it again. Echoing it into the page would
put it in the browser's page cache and history and in anything that reads the page; keeping
it server-side would store an unsaved secret for a form the operator may abandon.
A typed secret is parsed by the adapter (a service-account JSON becomes the object the
adapter needs). Stored secrets never follow the vendor to a new origin, and every address
is checked against the host policy: ``routing.services`` decides both, for this form and
for ``manage.py vendor`` alike.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS

from routing import services
from routing.models import Vendor, VendorKind
from routing.vendors import adapter_class
from routing.vendors.base import OptionSpec, SettingProblem, setting_label

OPTION_PREFIX = "option_"
SECRET_PREFIX = "secret_"
# Secret names that hold a whole document (a service-account JSON, a PEM key) get a text area.
_MULTILINE_HINTS = ("json", "private_key", "service_account", "pem")
ENTER_AGAIN = (
    "Enter this again: a typed secret is never sent back to the page, so it was not kept when the form had errors."
)


class SecretTextarea(forms.Textarea):
    """A text area that never renders its value: a pasted key is not sent back with form errors."""

    def format_value(self, value: Any) -> str | None:
        return None


def _secret_widget(name: str) -> forms.Widget:
    if any(hint in name for hint in _MULTILINE_HINTS):
        return SecretTextarea(attrs={"rows": 4, "cols": 60, "autocomplete": "off", "spellcheck": "false"})
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


def _option_field(name: str, spec: OptionSpec | None) -> forms.Field:
    if spec is None:
        return forms.CharField(label=setting_label(name), required=False)
    help_text = spec.describe(choices=not spec.choices)  # a select shows its choices itself
    if spec.choices:
        return forms.ChoiceField(
            label=setting_label(name), required=False, choices=spec.choices, initial=spec.default, help_text=help_text
        )
    widget = forms.TextInput(attrs={"placeholder": spec.default} if spec.default else {})
    return forms.CharField(label=setting_label(name), required=False, help_text=help_text, widget=widget)


class VendorFormBase(forms.ModelForm):
    """Common fields; ``vendor_form_for`` adds the kind's option and secret fields."""

    kind_name: str = ""
    # Read by the admin before it builds the form (``VendorAdmin._kind``); absent: the kind in the URL.
    kind = forms.ChoiceField(
        label="Kind",
        choices=VendorKind.choices,
        required=False,
        help_text="Each kind has its own settings: choosing another shows its form.",
    )
    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"class": "vURLField"}),  # the admin's width for addresses
    )

    class Meta:
        model = Vendor
        fields = ["name", "base_url", "enabled", "connect_timeout", "first_byte_timeout", "idle_timeout"]
        help_texts = {
            "connect_timeout": "Seconds; blank uses the site default.",
            "first_byte_timeout": "Seconds; blank uses the site default.",
            "idle_timeout": "Seconds; blank uses the site default.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adapter = adapter_class(self.kind_name)
        if self.instance.pk:
            del self.fields["kind"]  # a vendor keeps its kind: the change form shows it, read-only
        else:
            self.fields["kind"].initial = self.kind_name
        self.fields["base_url"].help_text = base_url_help(self.kind_name)
        if adapter.base_url_example:
            self.fields["base_url"].widget.attrs["placeholder"] = adapter.base_url_example
        stored_options = self.instance.options or {}
        stored_secrets = self.stored_credentials()
        for name in self.option_names():
            field = self.fields[OPTION_PREFIX + name]
            field.initial = stored_options.get(name, field.initial)  # a select's default when not stored
        if not stored_secrets:
            self.fields.pop("remove_credentials", None)  # nothing stored, nothing to remove
        for name in self.secret_names():
            field = self.fields[SECRET_PREFIX + name]
            state = (
                "set; leave blank to keep it, type a new value to replace it" if name in stored_secrets else "not set"
            )
            field.help_text = f"Write-only. Currently {state}."
        self.vendor_options: dict[str, Any] = {}
        # Secrets typed now (parsed), and the whole set the vendor will hold once saved.
        self.typed_credentials: dict[str, Any] = {}
        self.vendor_credentials: dict[str, Any] = {}
        self.remove_credentials = False

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return adapter_class(cls.kind_name).option_names

    @classmethod
    def secret_names(cls) -> tuple[str, ...]:
        return adapter_class(cls.kind_name).secret_names

    def stored_credentials(self) -> dict[str, Any]:
        return self.instance.credentials() if self.instance.pk and self.instance.credentials_encrypted else {}

    def field_of(self, setting: str) -> str | None:
        """The form field of an adapter setting (``None``: the form as a whole)."""
        if setting == "base_url":
            return setting
        if setting in self.option_names():
            return OPTION_PREFIX + setting
        if setting in self.secret_names():
            return SECRET_PREFIX + setting
        return None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        options = {n: data.get(OPTION_PREFIX + n) for n in self.option_names()}
        self.vendor_options = {k: v.strip() for k, v in options.items() if isinstance(v, str) and v.strip()}
        self.remove_credentials = bool(data.get("remove_credentials"))
        self.typed_credentials = self.parsed_secrets(data)
        base_url = data.get("base_url") or ""
        # Judged as if stored credentials stayed, until the fields are valid: every other problem shows now.
        self.vendor_credentials = {**self.stored_credentials(), **self.typed_credentials}
        if not self.errors:
            self.resolve_credentials(base_url)
        problems = adapter_class(self.kind_name).problems(base_url, self.vendor_options, self.vendor_credentials)
        self.add_problems(problems)
        if self.errors:
            return data
        try:
            services.vendor_destinations_check(self.kind_name, base_url, self.vendor_options, self.vendor_credentials)
        except services.VendorHostRefused as error:
            self.add_error(self.field_of(error.setting), f"This address is not allowed: {error.reason}.")
        return data

    def resolve_credentials(self, base_url: str) -> None:
        """Set the credentials the vendor will hold once saved; an error at the field when none can follow it."""
        vendor = self.instance if self.instance.pk else None
        try:
            self.vendor_credentials = services.vendor_credentials_resolve(
                vendor, base_url, self.vendor_options, self.typed_credentials, remove=self.remove_credentials
            )
        except services.VendorCredentialsRequired as error:
            self.add_error(
                self.field_of(error.setting),
                f"The vendor's requests would now go to {error.new_origin} instead of "
                f"{error.old_origin or 'nowhere'}. Enter its credentials again: stored credentials are never "
                "sent to a new address.",
            )
            if self.secret_names():
                self.add_error(SECRET_PREFIX + self.secret_names()[0], "Enter the credentials for the new address.")
        except ValueError as error:
            self.add_error(None, str(error))

    def add_problems(self, problems: list[SettingProblem]) -> None:
        """Show each problem at its field, unless that field already says what is wrong with it."""
        for problem in problems:
            field = self.field_of(problem.setting) if problem.setting else None
            if field is not None and field in self.errors:
                continue
            message = problem.for_people()
            if message not in self.errors.get(field or NON_FIELD_ERRORS, []):
                self.add_error(field, message)

    def full_clean(self) -> None:
        super().full_clean()
        if not self.is_bound or not self.errors:
            return
        for name in self.secret_names():
            field = SECRET_PREFIX + name
            if self.data.get(self.add_prefix(field)) and field not in self.errors:
                self.add_error(field, ENTER_AGAIN)

    def parsed_secrets(self, data: dict[str, Any]) -> dict[str, Any]:
        """Return the secrets typed now as the adapter stores them; an unusable one is an error at its field."""
        adapter = adapter_class(self.kind_name)
        typed: dict[str, Any] = {}
        for name in self.secret_names():
            text = data.get(SECRET_PREFIX + name)
            if not text:
                continue
            try:
                typed[name] = adapter.parse_secret(name, text)
            except ValueError as error:
                self.add_error(SECRET_PREFIX + name, str(error))  # the adapter's message never quotes the value
        return typed


def base_url_help(kind: str) -> str:
    """Return the base URL's help for vendors of ``kind``: what it is and an example of the kind's own."""
    adapter = adapter_class(kind)
    example = f" For example {adapter.base_url_example}" if adapter.base_url_example else ""
    return adapter.base_url_help + example


def vendor_form_for(kind: str) -> type[VendorFormBase]:
    """Return the admin form class for vendors of ``kind`` (``ValueError`` for an unknown kind)."""
    adapter = adapter_class(kind)
    fields: dict[str, Any] = {"kind_name": kind}
    for name in adapter.option_names:
        fields[OPTION_PREFIX + name] = _option_field(name, adapter.option_specs.get(name))
    for name in adapter.secret_names:
        fields[SECRET_PREFIX + name] = forms.CharField(
            label=setting_label(name), required=False, strip=True, widget=_secret_widget(name)
        )
    if adapter.secret_names:
        fields["remove_credentials"] = forms.BooleanField(
            label="Remove stored credentials", required=False, help_text="Values typed above are kept."
        )
    return type(f"{kind.capitalize()}VendorForm", (VendorFormBase,), fields)
