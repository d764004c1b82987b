"""Collections, documents and ingestion jobs."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ragline import jsonbody
from ragline.api.deps import CallerDep, RuntimeDep
from ragline.api.errors import ApiError
from ragline.api.schemas import (
    CollectionOut,
    DocumentOut,
    JobOut,
    SubmitResponse,
    SubmittedDocument,
    TextDocument,
)
from ragline.domain import COLLECTION_PATTERN, Document
from ragline.errors import DocumentError, NotFoundError, UnsupportedFormatError
from ragline.factory import Runtime
from ragline.ingestion.parsers import check_format
from ragline.service import VERSION_MAX_AGE_S
from ragline.store.repository import Submission

router = APIRouter(prefix="/v1", tags=["documents"])
CollectionPath = Annotated[str, Path(pattern=COLLECTION_PATTERN, description="Collection name")]
MAX_FILES_PER_UPLOAD = 100


@router.post(
    "/collections/{collection}/documents",
    status_code=202,
    response_model=SubmitResponse,
    responses={200: {"description": "every document was already there (no new job)"}},
)
async def submit_documents(
    collection: CollectionPath, request: Request, caller: CallerDep, runtime: RuntimeDep
) -> JSONResponse:
    """Upload files (multipart, field `files`, one or more) or JSON `{text, source}`.

    Each new or changed document gets an ingestion job (202). Content the collection already
    holds is not ingested again: the existing document comes back with `duplicate: true`, and
    when every document is a duplicate the status is 200.
    """
    caller.check_collection(collection)
    files = await _read_request(request, runtime.settings.ingestion.max_file_bytes)
    submissions: list[tuple[str, Submission]] = []
    for source, data in files:
        submission = await run_in_threadpool(
            runtime.store.submit, collection, source, data, runtime.settings.ingestion.max_attempts
        )
        submissions.append((source, submission))
    body = SubmitResponse(
        documents=[
            SubmittedDocument(
                document_id=s.document.id,
                source=s.document.source,
                job_id=s.job.id if s.job else None,
                status=s.document.status,
                duplicate=s.duplicate,
            )
            for _, s in submissions
        ]
    )
    status = 200 if all(s.duplicate for _, s in submissions) else 202
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


async def _read_request(request: Request, max_file_bytes: int) -> list[tuple[str, bytes]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=MAX_FILES_PER_UPLOAD, max_fields=MAX_FILES_PER_UPLOAD)
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(
                422,
                "no files in the upload: send them in multipart field 'files'",
                "invalid_request",
            )
        return [await _read_upload(upload, max_file_bytes) for upload in uploads]
    if content_type.startswith("application/json"):
        try:
            document = TextDocument.model_validate(jsonbody.loads(await request.body()))
        except (ValueError, ValidationError) as exc:
            raise ApiError(
                422, f"expected JSON {{text, source}}: {exc}", "invalid_request"
            ) from exc
        data = document.text.encode()
        if len(data) > max_file_bytes:
            raise ApiError(413, f"document is {len(data)} bytes; the limit is {max_file_bytes}")
        name = _safe_name(document.source)
        _check_format(data, name)
        return [(name, data)]
    raise ApiError(
        415,
        "send multipart/form-data (files) or application/json ({text, source})",
        "unsupported_media_type",
    )


async def _read_upload(upload: UploadFile, max_file_bytes: int) -> tuple[str, bytes]:
    name = _safe_name(upload.filename or "")
    if upload.size is not None and upload.size > max_file_bytes:
        raise ApiError(413, f"{name} is {upload.size} bytes; the limit is {max_file_bytes}")
    data = await upload.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise ApiError(413, f"{name} exceeds the {max_file_bytes}-byte limit")
    _check_format(data, name)
    return name, data


def _check_format(data: bytes, name: str) -> None:
    """Refuse at once what the parser would refuse without parsing (wrong type, empty, content
    that does not match the extension): nothing is stored, no job dies later."""
    try:
        check_format(data, name)
    except UnsupportedFormatError as exc:
        raise ApiError(415, str(exc), "unsupported_media_type") from exc
    except DocumentError as exc:
        raise ApiError(422, str(exc), "invalid_document") from exc


def _safe_name(name: str) -> str:
    """The file name without any directory part ('../../etc/passwd' → 'passwd') or control
    characters (a name goes into prompts, citations and logs)."""
    printable = "".join(c for c in name if c.isprintable())
    cleaned = PurePath(printable.replace("\\", "/")).name.strip()
    if not cleaned or cleaned in (".", ".."):
        raise ApiError(422, "every file needs a name", "invalid_request")
    return cleaned[:255]


@router.get("/collections", response_model=list[CollectionOut])
def list_collections(caller: CallerDep, runtime: RuntimeDep) -> list[CollectionOut]:
    """Collections this caller may use, with document and chunk counts."""
    return [
        CollectionOut(
            name=c.name,
            documents=c.documents,
            chunks=c.chunks,
            version=c.version,
            created_at=c.created_at,
        )
        for c in runtime.store.list_collections()
        if caller.key is None or caller.key.allows(c.name)
    ]


@router.get("/collections/{collection}/documents", response_model=list[DocumentOut])
def list_documents(
    collection: CollectionPath, caller: CallerDep, runtime: RuntimeDep
) -> list[DocumentOut]:
    caller.check_collection(collection)
    return shown(runtime, runtime.store.list_documents(collection))


@router.get("/documents/{document_id}", response_model=DocumentOut)
def get_document(document_id: str, caller: CallerDep, runtime: RuntimeDep) -> DocumentOut:
    document = runtime.store.get_document(document_id)
    _hide_unless_allowed(caller, document.collection, f"document {document_id} does not exist")
    return shown(runtime, [document])[0]


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(document_id: str, caller: CallerDep, runtime: RuntimeDep) -> None:
    """Remove the document from the store and every index; its answers leave the caches."""
    _authorized_document(runtime, caller, document_id)
    runtime.delete_document(document_id)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, caller: CallerDep, runtime: RuntimeDep) -> JobOut:
    job = runtime.store.get_job(job_id)
    _hide_unless_allowed(caller, job.collection, f"job {job_id} does not exist")
    return JobOut.of(job)


def shown(runtime: Runtime, documents: list[Document]) -> list[DocumentOut]:
    """Documents as the API shows them: `ready` only once the index has applied the change, as
    cache keys see it (the same cursor, read at most `VERSION_MAX_AGE_S` ago)."""
    cursor = runtime.index_sync.cursor(max_age_s=VERSION_MAX_AGE_S)
    pending = runtime.store.unindexed(cursor)
    return [DocumentOut.of(d, indexing=d.id in pending) for d in documents]


def _authorized_document(runtime: Runtime, caller: CallerDep, document_id: str) -> None:
    collection = runtime.store.get_document(document_id).collection
    _hide_unless_allowed(caller, collection, f"document {document_id} does not exist")


def _hide_unless_allowed(caller: CallerDep, collection: str, not_found: str) -> None:
    """What a key may not see is answered as missing (404, the store's own message), not
    403: a 403 would tell it that the id exists in another collection. Routes that name a
    collection keep their 403, checked before any lookup (it says nothing about data)."""
    if caller.key is not None and not caller.key.allows(collection):
        raise NotFoundError(not_found)
