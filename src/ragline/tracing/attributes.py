"""Span names and attribute keys: OpenInference conventions, plus the Langfuse keys that have no
OpenInference twin (see docs/tracing.md). The only place these strings are spelled."""

# span names
QUERY = "rag.query"
RETRIEVE_ROOT = "rag.retrieve"
EMBEDDING = "embedding"
RETRIEVE = "retrieve"
RETRIEVE_DENSE = "retrieve.dense"
RETRIEVE_SPARSE = "retrieve.sparse"
MMR = "mmr"
PROMPT = "prompt"
PLAN = "plan"  # decompose mode: the planning call and one `sub_question` span per step
SUB_QUESTION = "sub_question"
LLM = "llm"
INGEST = "ingest"
PARSE = "parse"
CHUNK = "chunk"
EMBED = "embed"
STORE = "store"

# OpenInference
PROJECT_NAME = "openinference.project.name"  # a resource attribute: the Phoenix project
SPAN_KIND = "openinference.span.kind"
KIND_CHAIN, KIND_EMBEDDING, KIND_RETRIEVER, KIND_LLM = "CHAIN", "EMBEDDING", "RETRIEVER", "LLM"
INPUT_VALUE = "input.value"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
SESSION_ID = "session.id"
USER_ID = "user.id"
TAGS = "tag.tags"  # Langfuse reads it as the trace's tags
EMBEDDING_MODEL_NAME = "embedding.model_name"
EMBEDDING_TEXT = "embedding.embeddings.0.embedding.text"
RETRIEVAL_DOCUMENTS = "retrieval.documents"  # + ".{i}.document.{id,score,content,metadata}"
LLM_MODEL_NAME = "llm.model_name"
LLM_INVOCATION_PARAMETERS = "llm.invocation_parameters"
LLM_INPUT_MESSAGES = "llm.input_messages"  # + ".{i}.message.{role,content}"
LLM_OUTPUT_MESSAGES = "llm.output_messages"
LLM_TOKEN_COUNT_PROMPT = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL = "llm.token_count.total"
PROMPT_TEMPLATE = "llm.prompt_template.template"
PROMPT_TEMPLATE_VERSION = "llm.prompt_template.version"

# Langfuse keys without an OpenInference twin
LANGFUSE_TRACE_NAME = "langfuse.trace.name"
LANGFUSE_ENVIRONMENT = "langfuse.environment"
LANGFUSE_RELEASE = "langfuse.release"
LANGFUSE_OBSERVATION_TYPE = "langfuse.observation.type"
LANGFUSE_MODEL_NAME = "langfuse.observation.model.name"
LANGFUSE_COMPLETION_START = "langfuse.observation.completion_start_time"
LANGFUSE_PROMPT_NAME = "langfuse.observation.prompt.name"
LANGFUSE_PROMPT_VERSION = "langfuse.observation.prompt.version"
LANGFUSE_TRACE_METADATA = "langfuse.trace.metadata"  # + ".{key}"

# ragline
COLLECTION = "ragline.collection"
RAG_CONFIG_HASH = "ragline.rag_config_hash"
CACHE_ANSWER_HIT = "ragline.cache.answer_hit"
CACHE_RETRIEVAL_HIT = "ragline.cache.retrieval_hit"
TOP_K = "ragline.retrieval.top_k"
TOP_N = "ragline.retrieval.top_n"
FUSION = "ragline.retrieval.fusion"
RRF_K = "ragline.retrieval.rrf_k"
THRESHOLD = "ragline.retrieval.score_threshold"
MMR_ENABLED = "ragline.retrieval.mmr"
MMR_LAMBDA = "ragline.mmr.lambda"
MMR_CANDIDATES = "ragline.mmr.candidates"
MMR_SELECTED = "ragline.mmr.selected"  # chunk ids, in MMR order
HITS = "ragline.retrieval.hits"
LEG_HITS = "ragline.retrieval.leg_hits"  # a leg's ranking as JSON [[point_id, score], …]
EMPTY_RETRIEVAL = "ragline.retrieval.empty"
FINISH_REASON = "ragline.llm.finish_reason"
TIME_TO_FIRST_TOKEN_MS = "ragline.llm.time_to_first_token_ms"
USAGE_ESTIMATED = "ragline.llm.usage_estimated"
LLM_ATTEMPTS = "ragline.llm.attempts"
CONTEXT_TOKENS = "ragline.prompt.context_tokens"
CONTEXT_UTILISATION = "ragline.prompt.context_utilisation"
CONTEXT_CHUNKS = "ragline.prompt.chunks"
PROMPT_TOKENS = "ragline.prompt.tokens"
CONTEXT_BUDGET = "ragline.prompt.context_budget"
CITATIONS = "ragline.answer.citations"
INVALID_CITATIONS = "ragline.answer.invalid_citations"
JOB_ID = "ragline.job.id"
DOCUMENT_ID = "ragline.document.id"
ATTEMPT = "ragline.job.attempt"
WORKER_ID = "ragline.worker.id"
RETRY_IN_S = "ragline.job.retry_in_s"  # -1: no retry (the job is dead)
JOB_SUPERSEDED = "ragline.job.superseded"
PARSE_MEDIA_TYPE = "ragline.parse.media_type"
PARSE_SECTIONS = "ragline.parse.sections"
CHUNK_COUNT = "ragline.chunk.count"
CHUNK_TOKENS_MAX = "ragline.chunk.tokens_max"
CHUNK_TOKENS_MEAN = "ragline.chunk.tokens_mean"
CHUNK_SIZE = "ragline.chunk.size"
CHUNK_OVERLAP = "ragline.chunk.overlap"
STORE_SUPERSEDED = "ragline.store.superseded"
BATCH_SIZE = "ragline.embed.batch_size"
# multi-step queries (generation/multistep.py)
MODE = "ragline.mode"
SOURCE_WEIGHT = "ragline.source.weight"
BUDGET_EXCEEDED = "ragline.budget.exceeded"
BUDGET_SKIPPED = "ragline.budget.skipped"  # the steps the budget refused
BUDGET_TOKENS = "ragline.budget.tokens"
PLAN_SUB_QUESTIONS = "ragline.plan.sub_questions"
PLAN_FALLBACK = "ragline.plan.fallback"
PLAN_FALLBACK_REASON = "ragline.plan.fallback_reason"
PLAN_STEP = "ragline.plan.step"
# evaluation runs (evals/runs.py)
EVAL_RUN = "ragline.eval.run"
EVAL_ITEM = "ragline.eval.item"
FORCE_KEEP = "ragline.sampling.keep"  # a trace that sampling must always keep (eval items)
CANCELLED = "ragline.cancelled"  # the consumer stopped reading before the end
# passages the prompt-injection detector flagged (generation/injection.py), on `llm` spans
INJECTION_SUSPECTED = "ragline.injection.suspected"  # bool, on every llm span given passages
INJECTION_PASSAGES = "ragline.injection.passages"  # their [n] in the prompt
INJECTION_CHUNK_IDS = "ragline.injection.chunk_ids"
INJECTION_RULES = "ragline.injection.rules"  # detector rule names that fired
INJECTION_MATCHES = "ragline.injection.matches"  # JSON [{n, rule, text}]: content

# copied from the root to every span of its trace (Langfuse v4 filters per observation)
TRACE_LEVEL = (
    SESSION_ID,
    USER_ID,
    TAGS,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_ENVIRONMENT,
    LANGFUSE_RELEASE,
    COLLECTION,
)
# the key suffix of a retrieved document's text (content: the doctor reads it when captured)
CONTENT_SUFFIX = ".document.content"
