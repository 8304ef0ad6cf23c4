"""Forms: the project configuration form generated from strategy and extractor schemas, import, export.

Strategy parameters are not hand-written fields: :func:`build_project_form` asks the selection
registry for every strategy's schema (``strategy_schema(name)``: name, type, default, min, max,
choices, help, nullable) and turns each parameter into a typed form field named
``sp__<strategy>__<param>``, with its range enforced by the field and then by ``Param.validate``
itself, so the form can never accept what the strategy would refuse.  Only the chosen strategy's
fields are read; the others are disabled for that submission (the page script shows one group at
a time).  Extractor parameters work the same way (``ep__<extractor>__<param>``); a ``path``
parameter becomes a file upload.
"""
from __future__ import annotations

import math
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Count

from selection import DEFAULT_STRATEGY, get_strategy, strategy_names
from selection.extractors import get_extractor, extractor_names
from selection.extractors.torchscript import RETIRED_MESSAGE
from selection.params import Param

from .models import Annotation, Project
from .param_words import plain_help, plain_label
from .services.projects import extractor_changed

SP = "sp"
EP = "ep"
UPLOAD_SUFFIXES = {"onnx": (".onnx",), "precomputed": (".npy",)}
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts")  # refused everywhere: a TorchScript file is a program


def field_name(prefix: str, owner: str, param: str) -> str:
    return f"{prefix}__{owner}__{param}"


def _short(text: str, n: int = 70) -> str:
    """A dropdown entry that fits the form (the full description is in the help below it)."""
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def param_field(p: Param, *, upload: bool = False) -> forms.Field:
    """A typed form field for one schema parameter (required-ness is checked in ``clean``)."""
    help_text = f"{plain_help(p.name, p.help)} ({p.range_text()})"
    common: dict[str, Any] = {"required": False, "label": plain_label(p.name), "help_text": help_text,
                              "initial": p.default}
    if upload:
        return forms.FileField(required=False, label=p.name, help_text=p.help)
    if p.choices is not None:
        choices = [(str(c), str(c)) for c in p.choices]
        if p.nullable:
            choices = [("", "(none)")] + choices
        return forms.TypedChoiceField(choices=choices, coerce=lambda v, p=p: p.validate(v), empty_value=None,
                                      **common)
    if p.type == "bool":
        return forms.BooleanField(**common)
    if p.type == "int":
        return forms.IntegerField(min_value=None if p.min is None else math.ceil(p.min),
                                  max_value=None if p.max is None else math.floor(p.max), **common)
    if p.type == "float":
        f = forms.FloatField(min_value=p.min, max_value=p.max, **common)
        f.widget.attrs["step"] = "any"
        return f
    return forms.CharField(**common)


def _schema_params(prefix: str, owner: str) -> tuple[Param, ...]:
    return get_strategy(owner).schema() if prefix == SP else get_extractor(owner).params


class ProjectConfigForm(forms.ModelForm):
    """Base of the generated form; see :func:`build_project_form`."""

    classes_text = forms.CharField(
        label="Classes", required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One class per line, in order. A class named with one digit or letter gets that key on the "
                  "labeling page, the others free keys; keys stay fixed (\"Reassign keyboard keys\" starts over). "
                  "Left empty, an import with labels sets them.",
    )

    generated: dict[str, list[tuple[str, Param]]] = {}  # "sp:<strategy>" -> [(field name, Param)]
    user = None  # the admin user the form is built for (see build_project_form)

    class Meta:
        model = Project
        fields = ["name", "description", "strategy", "batch_size", "refill_policy", "refill_threshold",
                  "retrain_every", "audit_rate", "audit_target_halfwidth", "overlap_rate", "overlap_k", "l2", "seed",
                  "selection_ranks",
                  "extractor",
                  "align_every", "align_threshold", "finetune_params",
                  "suggestions", "suggest_min_accuracy", "candidate_coverage"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        inst = self.instance
        for name in ("suggest_min_accuracy", "candidate_coverage"):
            self.fields[name].required = False
        self.fields["classes_text"].initial = "\n".join(inst.classes or [])
        for name in ("align_every", "align_threshold", "overlap_rate", "overlap_k", "selection_ranks",
                     "audit_target_halfwidth"):
            if name in self.fields:
                self.fields[name].required = False  # left out of a submission: the project's value stays
        if "extractor" in self.fields:
            # Retired extractors (TorchScript) are offered to nobody; a project that already has one
            # keeps it in the list, so the rest of the form stays editable.
            self.fields["extractor"].choices = [
                (v, label) for v, label in self.fields["extractor"].choices
                if not get_extractor(v).retired or v == inst.extractor]
        for key, fields in self.generated.items():
            prefix, owner = key.split(":", 1)
            current = inst.strategy if prefix == SP else inst.extractor
            stored = (inst.strategy_params if prefix == SP else inst.extractor_params) or {}
            for name, p in fields:
                if owner == current and p.name in stored and not isinstance(self.fields[name], forms.FileField):
                    self.fields[name].initial = stored[p.name]
                if owner == current and isinstance(self.fields[name], forms.FileField) and stored.get(p.name):
                    self.fields[name].help_text = f"{p.help} Current file: {stored[p.name]} (upload to replace)."
        if self.is_bound:
            chosen = {SP: self.data.get("strategy", inst.strategy), EP: self.data.get("extractor", inst.extractor)}
            for key, fields in self.generated.items():
                prefix, owner = key.split(":", 1)
                if owner != chosen[prefix]:
                    for name, _ in fields:
                        self.fields[name].disabled = True  # not this submission's strategy: not read

    def _kept_or_in_range(self, name: str, lo: float, hi: float, error: str):
        """A setting a post may leave out (then the project's value stays); out of [lo, hi] is an error
        beside it: ``error`` formatted with the value ``v``."""
        v = self.cleaned_data.get(name)
        if v is None:
            return getattr(self.instance, name)
        if not lo <= v <= hi:
            raise forms.ValidationError(error.format(v=v))
        return v

    def clean_suggest_min_accuracy(self) -> float:
        return self._kept_or_in_range("suggest_min_accuracy", 0.0, 1.0,
                                      "the accuracy needed for suggestions must be between 0 and 1; got {v:g}")

    def clean_candidate_coverage(self) -> float:
        return self._kept_or_in_range(
            "candidate_coverage", 0.5, 0.99,
            "how often the candidates hold the right class must be between 0.5 and 0.99; got {v:g}")

    def clean_classes_text(self) -> list[str]:
        lines = [ln.strip() for ln in (self.cleaned_data.get("classes_text") or "").splitlines()]
        classes = [ln for ln in lines if ln]
        longest = Annotation._meta.get_field("label").max_length  # a class name is stored as a label
        too_long = [c[:40] + "…" for c in classes if len(c) > longest]
        if too_long:
            raise forms.ValidationError(f"class names may be at most {longest} characters; too long: {too_long}")
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            raise forms.ValidationError(f"classes must be unique; repeated: {dup}")
        # "Cat" and "cat" would share one ImageFolder folder on a case-insensitive disk, and the class
        # finder matches without case: two such classes are one class typed twice.
        folded: dict[str, list[str]] = {}
        for c in classes:
            folded.setdefault(c.casefold(), []).append(c)
        same = [" / ".join(repr(n) for n in names) for names in folded.values() if len(names) > 1]
        if same:
            raise forms.ValidationError(f"classes must differ by more than upper and lower case; "
                                        f"repeated: {', '.join(same)}")
        if self.instance.pk:  # a class dropped while items carry it would orphan those labels
            in_use = dict(
                Annotation.objects.filter(item__project=self.instance, is_current=True,
                                          action__in=[Annotation.Action.LABEL, Annotation.Action.CORRECT])
                .exclude(label="").exclude(label__in=classes)
                .values_list("label").annotate(n=Count("id")).order_by("label")
            )
            if in_use:
                used = ", ".join(f"{c!r} ({n} item{'s' if n != 1 else ''})" for c, n in in_use.items())
                raise forms.ValidationError(
                    f"cannot remove classes that items are labeled with: {used}; relabel those items on the "
                    "review page first, or keep the class")
        return classes

    def clean_audit_rate(self) -> float:
        v = self.cleaned_data["audit_rate"]
        if not (0.0 <= v <= 1.0):
            raise forms.ValidationError(f"audit rate {v} must be between 0 and 1 (a share of each batch)")
        return v

    def clean_audit_target_halfwidth(self) -> float:
        return self._kept_or_in_range("audit_target_halfwidth", 0.0, 0.5,
                                      "audit target half-width {v} must be between 0 (off) and 0.5")

    def clean_overlap_rate(self) -> float:
        return self._kept_or_in_range("overlap_rate", 0.0, 1.0,
                                      "overlap rate {v} must be between 0 and 1 (a share of each batch)")

    def clean_selection_ranks(self) -> int:
        return self._kept_or_in_range("selection_ranks", 1, 256,
                                      "selection ranks ({v}) must be from 1 to 256 (MPI ranks for 'firal')")

    def clean_overlap_k(self) -> int:
        return self._kept_or_in_range("overlap_k", 2, 10, "annotators per overlapped item ({v}) must be from 2 to 10")

    def clean_finetune_params(self) -> dict[str, Any]:
        from .services.transfer_common import finetune_config  # noqa: PLC0415

        if self.is_bound and "finetune_params" not in self.data:
            return self.instance.finetune_params  # left out of a submission: the project's settings stay
        v = self.cleaned_data.get("finetune_params") or {}
        if not isinstance(v, dict):
            raise forms.ValidationError("fine-tuning settings must be a JSON object, e.g. {\"method\": \"lpft\"}")
        try:
            finetune_config(v)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return v

    def clean_align_every(self) -> int:
        v = self.cleaned_data.get("align_every")
        return self.instance.align_every if v is None else v

    def clean_align_threshold(self) -> float:
        v = self.cleaned_data.get("align_threshold")
        if v is None:
            return self.instance.align_threshold
        if not math.isfinite(v):
            raise forms.ValidationError("the alignment threshold must be a finite number (0.03 in the ASVP paper)")
        return v

    def clean_batch_size(self) -> int:
        v = self.cleaned_data["batch_size"]
        if v < 1:
            raise forms.ValidationError("batch size must be at least 1")
        return v

    def _params(self, prefix: str, owner: str) -> dict[str, Any]:
        """The owner's parameters from the submitted fields, coerced by the schema (``Param.parse``)."""
        out: dict[str, Any] = {}
        for name, p in self.generated.get(f"{prefix}:{owner}", []):
            if isinstance(self.fields[name], forms.FileField) or name in self.errors:
                continue  # uploads are stored after validation; a field's own error is reported already
            if name not in self.data and p.type != "bool":
                # Not on the submitted form at all (e.g. a parameter added to the strategy after the page
                # was rendered, or a scripted post): the schema's default applies.  A field that was
                # on the form and left empty is still an error (Param.parse).
                out[p.name] = p.default
                continue
            try:
                out[p.name] = p.parse(self.cleaned_data.get(name))
            except ValueError as exc:
                self.add_error(name, str(exc))
        return out

    def clean(self):
        data = super().clean()
        strategy = data.get("strategy")
        if strategy is not None:
            params = self._params(SP, strategy)
            if not any(k.startswith(f"{SP}__{strategy}__") for k in self.errors):
                try:
                    get_strategy(strategy)(**params)  # the strategy's own validation has the last word
                except ValueError as exc:
                    self.add_error(None, f"strategy {strategy!r}: {exc}")
            data["strategy_params"] = params
        extractor = data.get("extractor")
        if extractor is not None:
            params = self._params(EP, extractor)
            stored = (self.instance.extractor_params or {}) if self.instance.extractor == extractor else {}
            for name, p in self.generated.get(f"{EP}:{extractor}", []):
                if isinstance(self.fields[name], forms.FileField):
                    if self.cleaned_data.get(name):
                        params[p.name] = ""  # filled in by the admin when it stores the upload
                    elif stored.get(p.name):
                        params[p.name] = stored[p.name]
                    elif extractor != "precomputed" and not get_extractor(extractor).retired:
                        self.add_error(name, f"extractor {extractor!r} needs a file: upload one")
            self._check_uploads(extractor)
            if extractor == "hf" and not str(params.get("model") or "").strip():
                self.add_error(field_name(EP, "hf", "model"), "give a model: a Hugging Face id such as "
                               "facebook/dinov2-small (in the workers' cache), or a folder (superusers)")
            if self._extractor_changed(extractor, params):
                from .services.embeddings import extractor_check_allowed  # noqa: PLC0415

                try:
                    extractor_check_allowed(user=self.user, name=extractor, params=params)
                except ValueError as exc:
                    self.add_error("extractor", str(exc))
            data["extractor_params"] = params
        return data

    def _extractor_changed(self, extractor: str, params: dict[str, Any]) -> bool:
        inst = self.instance
        return bool(self.uploads_for(extractor)) or extractor_changed(
            old=(inst.extractor, inst.extractor_params or {}), new=(extractor, params))

    def _check_uploads(self, extractor: str) -> None:
        for name, _ in self.generated.get(f"{EP}:{extractor}", []):
            f = self.cleaned_data.get(name) if isinstance(self.fields[name], forms.FileField) else None
            if not f:
                continue
            allowed = UPLOAD_SUFFIXES.get(extractor)
            if f.name.lower().endswith(TORCHSCRIPT_SUFFIXES) or get_extractor(extractor).retired:
                self.add_error(name, f"{f.name}: {RETIRED_MESSAGE}")
            elif allowed and not f.name.lower().endswith(allowed):
                self.add_error(name, f"{f.name}: extractor {extractor!r} takes a {' or '.join(allowed)} file")
            if f.size > settings.LOUPE_MAX_UPLOAD_BYTES:
                self.add_error(name, f"{f.name} is {f.size} bytes, more than LOUPE_MAX_UPLOAD_BYTES="
                                     f"{settings.LOUPE_MAX_UPLOAD_BYTES}")

    def save(self, commit=True):
        inst = super().save(commit=False)
        inst.classes = self.cleaned_data["classes_text"]
        inst.strategy_params = self.cleaned_data.get("strategy_params", {})
        inst.extractor_params = self.cleaned_data.get("extractor_params", inst.extractor_params)
        if commit:
            inst.save()
        return inst

    def uploads(self) -> dict[str, Any]:
        """Extractor parameter name -> uploaded file, for the chosen extractor."""
        return self.uploads_for(self.cleaned_data.get("extractor"))

    def uploads_for(self, ext: str | None) -> dict[str, Any]:
        return {p.name: self.cleaned_data[name] for name, p in self.generated.get(f"{EP}:{ext}", [])
                if isinstance(self.fields[name], forms.FileField) and self.cleaned_data.get(name)}


def extractor_warning(name: str) -> str:
    """The warning shown with an extractor's parameters ("" when it has none, or is not registered here:
    a project's stored name may be one only tests or another version register)."""
    return get_extractor(name).retired if name in extractor_names() else ""


def build_project_form(user=None) -> type[ProjectConfigForm]:
    """A ProjectConfigForm subclass with one typed field per parameter of every registered strategy and extractor.

    ``user``: the admin it is built for; project admins who are not superusers are not offered
    extractors that run code, nor server folders as models.
    """
    attrs: dict[str, Any] = {"user": user}
    generated: dict[str, list[tuple[str, Param]]] = {}
    strategies = strategy_names()
    for s in strategies:
        for p in get_strategy(s).schema():
            name = field_name(SP, s, p.name)
            attrs[name] = param_field(p)
            generated.setdefault(f"{SP}:{s}", []).append((name, p))
    for e in extractor_names():
        for p in get_extractor(e).params:
            name = field_name(EP, e, p.name)
            attrs[name] = param_field(p, upload=(p.name == "path"))
            generated.setdefault(f"{EP}:{e}", []).append((name, p))
    attrs["strategy"] = forms.ChoiceField(
        choices=[(s, _short(f"{s} - {get_strategy(s).description}".rstrip(" -"))) for s in strategies],
        initial=DEFAULT_STRATEGY,
        help_text=f"Selection strategy ('{DEFAULT_STRATEGY}' for a new project); a change applies from the next round.")
    attrs["extractor"] = forms.ChoiceField(
        choices=[(e, f"{e} - {get_extractor(e).description}") for e in extractor_names()],
        # The model's default: without it a new project's page preselects the first choice ('hf'), which
        # needs a model id, and the add form cannot be saved as it comes.
        initial=Project._meta.get_field("extractor").default,
        help_text="Feature extractor; a change (or new parameters) re-computes the embeddings in the background. "
                  "TorchScript ('torch') is retired: export the model to ONNX and choose 'onnx'.")
    attrs["generated"] = generated
    attrs["Meta"] = type("Meta", (ProjectConfigForm.Meta,), {})
    return type("ProjectForm", (ProjectConfigForm,), attrs)
