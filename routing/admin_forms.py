"""The vendor admin form, built from the adapter of the vendor's kind.

Each adapter declares ``option_names`` (plain settings kept in ``Vendor.options``) and
``secret_names`` (kept encrypted); the form gets one field per name, so a new vendor kind
needs no admin change. Secrets are write-only: never rendered, shown as set / not set, kept
when left blank, replaced when typed, removed with "Remove stored credentials".
"""

from __future__ import annotations

from typing import Any

from django import forms

from routing.models import Vendor
from routing.vendors import adapter_class

OPTION_PREFIX = "option_"
SECRET_PREFIX = "secret_"
# Secret names that hold a whole document (a service-account JSON, a PEM key) get a text area.
_MULTILINE_HINTS = ("json", "private_key", "service_account", "pem")


def field_label(name: str) -> str:
    label = name.replace("_", " ").capitalize()
    return label.replace("Api ", "API ").replace(" url", " URL").replace(" id", " ID")


def _secret_widget(name: str) -> forms.Widget:
    if any(hint in name for hint in _MULTILINE_HINTS):
        return forms.Textarea(attrs={"rows": 4, "cols": 60, "autocomplete": "off", "spellcheck": "false"})
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class VendorFormBase(forms.ModelForm):
    """Common fields; ``vendor_form_for`` adds the kind's option and secret fields."""

    kind_name: str = ""
    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text="The vendor's API root, e.g. https://api.openai.com/v1",
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
        stored_options = self.instance.options or {}
        stored_secrets = self.stored_credentials()
        for name in self.option_names():
            self.fields[OPTION_PREFIX + name].initial = stored_options.get(name, "")
        for name in self.secret_names():
            field = self.fields[SECRET_PREFIX + name]
            state = (
                "set; leave blank to keep it, type a new value to replace it" if name in stored_secrets else "not set"
            )
            field.help_text = f"Write-only. Currently {state}."
        self.vendor_options: dict[str, Any] = {}
        self.vendor_credentials: dict[str, Any] = {}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return adapter_class(cls.kind_name).option_names

    @classmethod
    def secret_names(cls) -> tuple[str, ...]:
        return adapter_class(cls.kind_name).secret_names

    def stored_credentials(self) -> dict[str, Any]:
        return self.instance.credentials() if self.instance.pk and self.instance.credentials_encrypted else {}

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        options = {n: data.get(OPTION_PREFIX + n) for n in self.option_names()}
        self.vendor_options = {k: v.strip() for k, v in options.items() if isinstance(v, str) and v.strip()}
        stored = {} if data.get("remove_credentials") else self.stored_credentials()
        typed = {n: data.get(SECRET_PREFIX + n) for n in self.secret_names()}
        self.vendor_credentials = {**stored, **{k: v for k, v in typed.items() if v}}
        try:
            adapter_class(self.kind_name).validate(
                data.get("base_url") or "", self.vendor_options, self.vendor_credentials
            )
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        return data


def vendor_form_for(kind: str) -> type[VendorFormBase]:
    """Return the admin form class for vendors of ``kind`` (``ValueError`` for an unknown kind)."""
    adapter = adapter_class(kind)
    fields: dict[str, Any] = {"kind_name": kind}
    for name in adapter.option_names:
        fields[OPTION_PREFIX + name] = forms.CharField(label=field_label(name), required=False)
    for name in adapter.secret_names:
        fields[SECRET_PREFIX + name] = forms.CharField(
            label=field_label(name), required=False, strip=True, widget=_secret_widget(name)
        )
    if adapter.secret_names:
        fields["remove_credentials"] = forms.BooleanField(
            label="Remove stored credentials", required=False, help_text="Values typed above are kept."
        )
    return type(f"{kind.capitalize()}VendorForm", (VendorFormBase,), fields)
