"""Amazon Bedrock's Rerank through boto3 against a real local server that speaks its wire format and checks SigV4."""

import asyncio

import pytest

pytest.importorskip("boto3", reason="the bedrock extra is not installed")

from rankrelay import (  # noqa: E402
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    Document,
    RateLimitError,
    load_reranker,
)
from rankrelay.testing import Fault, relevance  # noqa: E402
from rankrelay.testing.bedrock_api import AWS_KEY_ID, AWS_SECRET, FakeBedrockAPI, throttling  # noqa: E402

QUERY = "boundary layer separation"
TEXTS = ["wing lift at low speed", "boundary layer flow", "separation of the boundary layer", "cooking pasta"]


def expected(texts=TEXTS):
    return sorted(range(len(texts)), key=lambda i: (-relevance(QUERY, texts[i]), i))


@pytest.fixture
def aws(monkeypatch, tmp_path):
    """The standard credential chain with nothing in it but what a test sets (no files, no instance role)."""
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    return monkeypatch


@pytest.fixture
def bedrock(aws):
    api = FakeBedrockAPI().start()
    yield api
    api.stop()


def rr(server, model="amazon.rerank-v1:0", **options):
    options.setdefault("timeout", 2.0)
    return load_reranker(f"bedrock:{model}", region="us-west-2", endpoint_url=server.url, **options)


def test_rerank_sends_the_documents_inline_to_the_model_arn_signed_and_reads_each_score(bedrock):
    docs = [*TEXTS[:3], Document(TEXTS[3], id="last", metadata={"m": 1})]
    res = rr(bedrock).rerank(QUERY, docs)
    assert res.indices == expected() and res.backend == "bedrock"
    assert next(r for r in res if r.id == "last").metadata == {"m": 1}
    (req,) = bedrock.requests
    assert req["path"] == "/rerank" and req["headers"]["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
    assert "/us-west-2/bedrock/aws4_request" in req["headers"]["Authorization"]
    assert req["body"] == {
        "queries": [{"type": "TEXT", "textQuery": {"text": QUERY}}],
        "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": t}}}
                    for t in TEXTS],
        "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
            "numberOfResults": 4,
            "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"}}},
    }
    top = res.results[0]
    assert top.score == pytest.approx(relevance(QUERY, TEXTS[top.index]) / (1 + relevance(QUERY, TEXTS[top.index])))
    assert res.info["request_ids"] and res.info["billed_units"] == {"queries": 1}


def test_a_model_arn_and_model_fields_go_as_given(bedrock):
    arn = "arn:aws:bedrock:eu-central-1::foundation-model/cohere.rerank-v3-5:0"
    rr(bedrock, arn, additional_fields={"max_tokens_per_doc": 512}).rerank(QUERY, TEXTS)
    config = bedrock.requests[0]["body"]["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert config["modelConfiguration"] == {"modelArn": arn,
                                            "additionalModelRequestFields": {"max_tokens_per_doc": 512}}


def test_every_page_of_an_answer_is_read_and_billing_counts_a_query_per_100_documents(aws):
    api = FakeBedrockAPI(page_size=40).start()
    try:
        texts = [f"{TEXTS[i % 4]} {i}" for i in range(150)]
        res = rr(api).rerank(QUERY, texts)
        assert len(res) == 150 and sorted(res.indices) == list(range(150))
        assert [r["body"].get("nextToken") for r in api.requests] == [None, "p:40", "p:80", "p:120"]
        assert res.info["billed_units"] == {"queries": 2}  # 150 documents: two queries of up to 100
    finally:
        api.stop()


def test_throttling_is_a_rate_limit_retried_by_the_one_policy(bedrock):
    bedrock.faults = [throttling()]
    assert rr(bedrock, max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    assert bedrock.count() == 2  # botocore's own retries are off: the two are ours
    bedrock.faults = [throttling()] * 2
    with pytest.raises(RateLimitError, match=r"^bedrock: HTTP 429: ThrottlingException: Too many requests"):
        rr(bedrock, max_attempts=2).rerank(QUERY, TEXTS)
    assert bedrock.count() == 4


def test_a_wrong_secret_is_an_authentication_error_never_retried(bedrock, aws):
    aws.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(AuthenticationError, match="HTTP 403: InvalidSignatureException: The request signature"):
        rr(bedrock, max_attempts=3).rerank(QUERY, TEXTS)
    assert bedrock.count() == 1


def test_no_credentials_anywhere_fail_before_any_request(bedrock, aws):
    aws.delenv("AWS_ACCESS_KEY_ID")
    aws.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthenticationError, match=r"^bedrock: no AWS credentials"):
        rr(bedrock, max_attempts=3).rerank(QUERY, TEXTS)
    assert bedrock.count() == 0


def test_server_errors_timeouts_resets_and_malformed_replies_are_typed(bedrock):
    bedrock.faults = [Fault("status", 503, {"x-amzn-ErrorType": "ServiceUnavailableException"})]
    assert rr(bedrock, max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    bedrock.faults = [Fault("sleep", seconds=1.5)]
    with pytest.raises(BackendTimeoutError):
        rr(bedrock, timeout=0.5, max_attempts=1).rerank(QUERY, TEXTS)
    bedrock.faults = [Fault("reset")]
    with pytest.raises(BackendUnavailableError):
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)
    bedrock.faults = [Fault("malformed")]
    with pytest.raises(BadResponseError, match=r"^bedrock: reply has no results list$"):  # botocore reads it as {}
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)


def test_async_calls_and_close(bedrock):
    reranker = rr(bedrock)
    res = asyncio.run(reranker.arerank(QUERY, TEXTS, top_n=2))
    assert res.indices == expected()[:2]
    reranker.close()
    assert reranker.rerank(QUERY, TEXTS).indices == expected()  # a closed reranker opens a new client


def test_a_missing_model_or_region_is_a_config_error(aws):
    with pytest.raises(ConfigError, match=r"^bedrock needs a model id or ARN, e\.g\. 'bedrock:amazon\.rerank-v1:0'$"):
        load_reranker("bedrock:", region="us-west-2")
    with pytest.raises(ConfigError, match=r"^bedrock needs a region: region='us-west-2', or AWS_REGION"):
        load_reranker("bedrock:amazon.rerank-v1:0")
    aws.setenv("AWS_REGION", "ap-northeast-1")
    assert load_reranker("bedrock:amazon.rerank-v1:0").arn == \
        "arn:aws:bedrock:ap-northeast-1::foundation-model/amazon.rerank-v1:0"


async def test_aclose_closes_the_boto3_client_too(bedrock):
    reranker = rr(bedrock)
    assert (await reranker.arerank(QUERY, TEXTS)).indices == expected()
    assert reranker._boto is not None
    await reranker.aclose()
    assert reranker._boto is None and bedrock.wait_connections(0)


# -- what each failure says: the typed error a fallback chain and an operator read -------------------------------
def test_a_throttled_reply_keeps_its_retry_after_request_id_and_message(bedrock):
    bedrock.faults = [Fault("status", 429, {"x-amzn-ErrorType": "ThrottlingException", "Retry-After": "7",
                                            "x-amzn-RequestId": "rid-429"}, body={"message": "Slow down"})]
    with pytest.raises(RateLimitError) as err:
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(err.value) == "bedrock: HTTP 429: ThrottlingException: Slow down"
    assert (err.value.backend, err.value.status, err.value.retry_after, err.value.request_id) == (
        "bedrock", 429, 7.0, "rid-429")


def test_throttling_is_a_rate_limit_whatever_status_carries_it(bedrock):
    bedrock.faults = [Fault("status", 400, {"x-amzn-ErrorType": "ThrottlingException"}, body={"message": "Rate"})]
    with pytest.raises(RateLimitError, match=r"^bedrock: HTTP 429: ThrottlingException: Rate$"):
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)


def test_a_refusal_without_a_message_names_its_code(bedrock):
    bedrock.faults = [Fault("status", 400, {"x-amzn-ErrorType": "ValidationException"}, body={"other": 1})]
    with pytest.raises(BadRequestError) as err:
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(err.value) == "bedrock: HTTP 400: ValidationException: " and err.value.backend == "bedrock"


def test_transport_failures_name_what_happened_and_who(bedrock, aws):
    bedrock.faults = [Fault("sleep", seconds=1.5)]
    with pytest.raises(BackendTimeoutError) as late:
        rr(bedrock, timeout=0.5, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(late.value) == "bedrock: no reply in time (ReadTimeoutError)" and late.value.backend == "bedrock"
    bedrock.faults = [Fault("reset")]
    with pytest.raises(BackendUnavailableError) as reset:
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(reset.value).startswith("bedrock: ConnectionClosedError: ") and reset.value.backend == "bedrock"
    bedrock.faults = [Fault("malformed")]
    with pytest.raises(BadResponseError) as bad:
        rr(bedrock, max_attempts=1).rerank(QUERY, TEXTS)
    assert bad.value.backend == "bedrock"
    aws.delenv("AWS_ACCESS_KEY_ID")
    aws.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthenticationError) as nobody:
        rr(bedrock).rerank(QUERY, TEXTS)
    assert str(nobody.value) == ("bedrock: no AWS credentials (Unable to locate credentials): set AWS_ACCESS_KEY_ID "
                                 "and AWS_SECRET_ACCESS_KEY, a profile, or a role")
    assert (nobody.value.backend, nobody.value.retryable) == ("bedrock", False)


def test_the_region_comes_from_the_standard_places_in_order(aws, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-3\n")
    aws.setenv("AWS_CONFIG_FILE", str(config))
    assert load_reranker("bedrock:amazon.rerank-v1:0").region == "eu-west-3"  # the AWS config
    aws.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert load_reranker("bedrock:amazon.rerank-v1:0").region == "ca-central-1"
    aws.setenv("AWS_REGION", "sa-east-1")
    assert load_reranker("bedrock:amazon.rerank-v1:0").region == "sa-east-1"
    assert load_reranker("bedrock:amazon.rerank-v1:0", region="us-east-2").region == "us-east-2"


def test_describe_and_the_client_say_what_was_configured(bedrock):
    reranker = rr(bedrock, connect_timeout=1.5, timeout=4.0, max_concurrency=16)
    about = reranker.describe()
    assert (reranker.model, about["model"], about["region"], about["endpoint_url"]) == (
        "amazon.rerank-v1:0", "amazon.rerank-v1:0", "us-west-2", bedrock.url)
    config = reranker._sync_client().meta.config
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (1.5, 4.0, 16)
    assert rr(bedrock).__class__(model="amazon.rerank-v1:0", region="us-west-2")._sync_client(
    ).meta.config.max_pool_connections == 10  # at least ten


def test_without_boto3_the_backend_says_which_extra_to_install(aws, monkeypatch):
    import sys

    from rankrelay.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingDependencyError, match=r"^the Bedrock backend needs the optional package 'boto3': "
                                                     r"pip install 'rankrelay\[bedrock\]'$"):
        load_reranker("bedrock:amazon.rerank-v1:0")


def test_closing_a_reranker_that_never_called_is_harmless(aws):
    reranker = load_reranker("bedrock:amazon.rerank-v1:0", region="us-west-2")
    reranker.close()
    reranker.close()
    assert reranker._boto is None


COHERE = "cohere.rerank-v3-5:0"


def test_a_cohere_model_through_invoke_model_sends_cohere_json_signed_and_reads_its_scores(bedrock):
    reranker = rr(bedrock, COHERE, api="invoke", additional_fields={"max_tokens_per_doc": 512})
    res = reranker.rerank(QUERY, TEXTS)
    sent = bedrock.requests[-1]
    assert sent["path"] == "/model/cohere.rerank-v3-5%3A0/invoke" and bedrock.invoked == [COHERE]
    assert sent["body"] == {"query": QUERY, "documents": TEXTS, "top_n": 4, "api_version": 2,
                            "max_tokens_per_doc": 512}
    assert res.indices == expected() and res.backend == "bedrock" and res.model == COHERE
    scores = {r.index: r.score for r in res}
    assert scores == {i: pytest.approx(relevance(QUERY, t) / (1 + relevance(QUERY, t))) for i, t in enumerate(TEXTS)}
    assert res.info["billed_units"] == {"queries": 1} and len(res.info["request_ids"]) == 1
    assert reranker.describe()["api"] == "invoke"
    assert reranker._sync_client().meta.service_model.service_name == "bedrock-runtime"
    assert rr(bedrock)._sync_client().meta.service_model.service_name == "bedrock-agent-runtime"


def test_invoke_model_throttling_is_a_rate_limit_and_a_malformed_body_is_typed(bedrock):
    bedrock.faults += [throttling(), throttling()]
    with pytest.raises(RateLimitError):
        rr(bedrock, COHERE, api="invoke", max_attempts=1).rerank(QUERY, TEXTS)
    assert rr(bedrock, COHERE, api="invoke", max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    bedrock.faults.append(Fault("malformed"))
    with pytest.raises(BadResponseError, match=r"^bedrock: malformed reply \(not JSON\)"):
        rr(bedrock, COHERE, api="invoke", max_attempts=1).rerank(QUERY, TEXTS)
    bedrock.faults.append(Fault("status", 200, body={"results": "none"}))
    with pytest.raises(BadResponseError, match=r"^bedrock: reply has no results list"):
        rr(bedrock, COHERE, api="invoke", max_attempts=1).rerank(QUERY, TEXTS)


def test_an_api_that_does_not_exist_or_invoke_of_a_model_that_is_not_cohere_is_a_config_error(aws):
    with pytest.raises(ConfigError, match=r"^bedrock: api must be one of rerank, invoke, got 'converse'$"):
        load_reranker(f"bedrock:{COHERE}", region="us-west-2", api="converse")
    with pytest.raises(ConfigError, match=r"^bedrock: api='invoke' speaks Cohere Rerank's body \(cohere.rerank-\*\), "
                                          r"not 'amazon.rerank-v1:0''s: use the Rerank API \(api='rerank'\)$"):
        load_reranker("bedrock:amazon.rerank-v1:0", region="us-west-2", api="invoke")
    arn = "arn:aws:bedrock:us-west-2:123456789012:provisioned-model/cohere.rerank-v3-5-abc"
    assert load_reranker(f"bedrock:{arn}", region="us-west-2", api="invoke").arn == arn
