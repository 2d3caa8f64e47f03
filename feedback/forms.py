"""Forms of the feedback pages; they validate input, services do the writing."""

from __future__ import annotations

from typing import Any

from django import forms

from registry.models import Application

from .constants import MAX_REQUEST_BYTES
from .models import FeedbackReport, IngestBatch
from .services import EnvelopeError
from .services.parsing import check_envelope

UPLOAD_FORMATS = {
    "csv": IngestBatch.Format.CSV,
    "jsonl": IngestBatch.Format.JSONL,
    "ndjson": IngestBatch.Format.JSONL,
    "json": IngestBatch.Format.JSON,
}


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV with a header row, or JSONL (one event per line); UTF-8, at most 5 MB."
    )
    application = forms.ModelChoiceField(
        queryset=Application.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label="(each row names its application)",
        help_text="Applies to rows whose application column is empty.",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        ext = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        if ext not in UPLOAD_FORMATS:
            raise forms.ValidationError("Upload a .csv, .jsonl or .json file.")
        if upload.size > MAX_REQUEST_BYTES:
            raise forms.ValidationError("The file is larger than 5 MB.")
        raw = upload.read()
        try:
            check_envelope(raw, UPLOAD_FORMATS[ext])
        except EnvelopeError as exc:
            raise forms.ValidationError(exc.message) from exc
        upload.raw, upload.format = raw, UPLOAD_FORMATS[ext]
        return upload


class ReportForm(forms.ModelForm):
    example_request_ids = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "req-8f2c…, one per line"}),
        help_text="Request ids of a few bad answers, one per line or comma-separated.",
    )

    class Meta:
        model = FeedbackReport
        fields = ["application", "model_version", "kind", "severity", "title", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 5})}
        help_texts = {"model_version": "Pre-filled with what serves the application now."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = self.fields[
            "model_version"
        ].queryset.select_related("registered_model")
        self.fields["model_version"].required = False

    def clean_example_request_ids(self) -> list[str]:
        raw = self.cleaned_data.get("example_request_ids") or ""
        ids = [part.strip() for part in raw.replace(",", "\n").splitlines() if part.strip()]
        if len(ids) > 100:
            raise forms.ValidationError("At most 100 request ids.")
        if any(len(i) > 128 for i in ids):
            raise forms.ValidationError("A request id has at most 128 characters.")
        return ids


class TriageForm(forms.Form):
    note = forms.CharField(required=False, max_length=2000)
