"""r1reward serve without vLLM: request validation, the batcher, the OpenRLHF adapter and the routes, on a
fake engine whose answers depend only on the prompt and its seed (as vLLM's seeded sampling does)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from r1reward.data.images import ImagePolicy, ImageRefused, load_untrusted_image
from r1reward.eval.api import Comparison, Pair, RewardModel
from r1reward.serve.app import create_app
from r1reward.serve.batcher import Batcher
from r1reward.serve.openrlhf import question_text, response_text, reward_items
from r1reward.serve.schemas import ServeError
from r1reward.serve.service import MAX_IMAGES, RewardService, compare_answer, reward_of
from serve_fakes import FakeEngine, FakeProcessor, data_uri, png_bytes


@pytest.fixture
def model():
    return RewardModel(FakeEngine(), FakeProcessor(), seed=3)


@pytest.fixture
def client(model, tmp_path):
    """The app on the fake engine; requests may name images under tmp_path."""
    service = RewardService(model, "fake", k=3, max_batch=12, wait_s=0.01, images=ImagePolicy(roots=(tmp_path,)))
    with TestClient(create_app(service)) as c:
        yield c


# --- routes: answers equal the Python API's ---------------------------------------------------------
def test_compare_rank_and_get_reward_equal_the_python_api(client, model, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    body = {"question": "Colour?", "images": [str(path)], "response_1": "red", "response_2": "blue", "seed": 5}
    answer = client.post("/v1/compare", json=body).json()
    expected = model.compare("Colour?", [str(path)], "red", "blue", k=3, seed=5)
    assert (answer["winner"], answer["votes"], answer["vote_share"], answer["reasoning"]) == (
        expected.winner,
        list(expected.votes),
        expected.vote_share,
        expected.reasoning,
    )
    assert answer["k"] == 3 and answer["agreement"] is None and answer["swap"] is False
    # The same image as a data URI and as bare base64 gives the same answer.
    for image in (data_uri(), base64.b64encode(png_bytes()).decode()):
        assert client.post("/v1/compare", json={**body, "images": image}).json() == answer

    swapped = client.post("/v1/compare", json={**body, "swap": True, "k": 2}).json()
    original, other = model.compare_pairs(
        [Pair("Colour?", [str(path)], "red", "blue"), Pair("Colour?", [str(path)], "blue", "red")], k=2, seed=5
    )
    assert swapped == {**compare_answer(original, other), "k": 2, "seed": 5, "swap": True}

    responses = ["red", "blue", "green"]
    ranked = client.post(
        "/v1/rank", json={"question": "Colour?", "images": [str(path)], "responses": responses, "k": 1}
    ).json()
    ranking = model.rank("Colour?", [str(path)], responses, k=1)
    assert ranked["order"] == ranking.order and ranked["wins"] == ranking.wins and ranked["seed"] == 3
    assert ranked["scores"] == [w / 4 for w in ranking.wins]

    reward = client.post(
        "/get_reward",
        json={
            "query": ["Q: colour? A: red", "Q: colour? A: blue"],
            "prompts": ["Q: colour? A:", "Q: colour? A:"],
            "labels": [json.dumps({"reference": "green", "images": [str(path)]}), "green"],
            "metas": [{}, {}],
        },
    ).json()
    results = model.compare_pairs(
        [Pair("Q: colour? A:", [str(path)], "red", "green"), Pair("Q: colour? A:", [], "blue", "green")], k=3
    )
    assert reward == {"rewards": [reward_of(c) for c in results], "scores": [reward_of(c) for c in results]}


def test_every_malformed_request_gets_a_one_line_4xx_and_the_server_lives(client, tmp_path):
    good = {"question": "Colour?", "images": [data_uri()], "response_1": "red", "response_2": "blue"}
    (tmp_path / "not-an-image.png").write_text("hello")
    cases = [
        ("/v1/compare", {k: v for k, v in good.items() if k != "response_2"}, 400, "response_2: Field required"),
        ("/v1/compare", {**good, "k": 0}, 400, "k:"),
        ("/v1/compare", {**good, "k": "many"}, 400, "k:"),
        ("/v1/compare", {**good, "seed": -1}, 400, "seed:"),
        ("/v1/compare", {**good, "response1": "x"}, 400, "response1: Extra inputs"),
        ("/v1/compare", {**good, "images": ["data:image/png;base64,@@@notbase64"]}, 400, "images[0]"),
        (
            "/v1/compare",
            {**good, "images": ["data:image/png;base64," + base64.b64encode(b"xx").decode()]},
            400,
            "not a decodable image",
        ),
        ("/v1/compare", {**good, "images": [str(tmp_path / "missing.png")]}, 400, "no such image under"),
        ("/v1/compare", {**good, "images": [str(tmp_path / "not-an-image.png")]}, 400, "not a decodable image"),
        ("/v1/compare", {**good, "images": ["http://example.com/a.png"]}, 400, "URLs are not supported"),
        ("/v1/compare", {**good, "images": [data_uri()] * (MAX_IMAGES + 1)}, 400, "at most"),
        ("/v1/rank", {"question": "q", "images": [], "responses": ["only one"]}, 400, "responses:"),
        ("/v1/rank", {"question": "q", "images": [], "responses": [str(i) for i in range(5)]}, 413, "--max-batch"),
        ("/get_reward", {"query": []}, 400, "query:"),
        ("/get_reward", {"query": ["a"], "prompts": ["p"]}, 400, "no reference"),
        ("/get_reward", {"query": ["a", "b"], "labels": ["r"]}, 400, "1 labels for 2 queries"),
        ("/get_reward", {"query": ["a"] * 13, "prompts": ["p"] * 13, "labels": ["r"] * 13}, 413, "--max-batch"),
    ]
    for path, body, status, words in cases:
        response = client.post(path, json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert words in error and "\n" not in error, (body, error)
    for raw, words in (
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b"\xff\xfe", "not valid JSON"),
    ):
        response = client.post("/v1/compare", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400 and words in response.json()["error"]
    # A JSON body is read as JSON whatever its content type (curl -d sends a form type).
    form = client.post(
        "/v1/compare", content=json.dumps(good), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 200
    assert client.get("/nowhere").status_code == 404 and "error" in client.get("/nowhere").json()
    assert client.get("/v1/compare").status_code == 405
    assert client.get("/health").json() == {"status": "ok", "model": "fake"}
    assert client.post("/v1/compare", json=good).status_code == 200


def test_models_and_metrics(client):
    body = {"question": "q", "images": [], "response_1": "a", "response_2": "b", "k": 2}
    assert client.post("/v1/compare", json=body).status_code == 200
    assert client.post("/v1/compare", json={"question": "q"}).status_code == 400
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == "fake" and card["k"] == 3 and card["max_batch"] == 12
    text = client.get("/metrics").text
    for line in (
        'r1reward_serve_requests_total{endpoint="/v1/compare",status="200"} 1.0',
        'r1reward_serve_requests_total{endpoint="/v1/compare",status="400"} 1.0',
        'r1reward_serve_request_seconds_count{endpoint="/v1/compare"} 2.0',
        "r1reward_serve_batch_prompts_count 1.0",
        "r1reward_serve_engine_seconds_count 1.0",
    ):
        assert line in text, line
    assert (
        sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("r1reward_serve_votes_total")) == 2
    )


def test_engine_errors_are_isolated_and_timeouts_are_504(model):
    engine = FakeEngine(fail_on="POISON")
    model.engine = engine
    service = RewardService(model, "fake", max_batch=64, wait_s=0.2, timeout_s=5)
    with TestClient(create_app(service)) as client:
        bodies = [{"question": "q", "images": [], "response_1": f"a{i}", "response_2": "b"} for i in range(3)]
        bodies.append({"question": "q", "images": [], "response_1": "POISON", "response_2": "b"})
        answers = _concurrently(lambda body: client.post("/v1/compare", json=body), bodies)
        assert [a.status_code for a in answers] == [200, 200, 200, 400]
        assert answers[3].json()["error"].startswith("the engine refused the request")
        assert "prompt too long" not in answers[3].json()["error"]  # exception text stays in the server log
        assert engine.calls[0] == (4, 1)  # one call for all four, then halves
        assert client.get("/health").status_code == 200

    model.engine = FakeEngine(delay=1.0)
    with TestClient(create_app(RewardService(model, "fake", timeout_s=0.3))) as client:
        response = client.post("/v1/compare", json=bodies[0])
        assert response.status_code == 504 and response.json()["error"].startswith("no answer from the engine")
        assert client.get("/health").status_code == 200


def _concurrently(fn, items):
    results = [None] * len(items)

    def run(i):
        results[i] = fn(items[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


# --- the batcher on its own ---------------------------------------------------------------------------
def _echo_batcher(calls, **kw):
    def run(prompts, k, seeds):
        calls.append((list(prompts), k))
        return [f"{p}/{s}/{k}" for p, s in zip(prompts, seeds)]

    return Batcher(run, **kw)


def test_batcher_merges_concurrent_requests_splits_by_size_and_k():
    async def main():
        calls = []
        batcher = _echo_batcher(calls, max_batch=5, wait_s=0.05)
        await batcher.start()
        jobs = [batcher.submit([f"r{i}a", f"r{i}b"], [i, i + 100], 1) for i in range(4)]
        jobs.append(batcher.submit(["x"], [7], 3))
        results = await asyncio.gather(*jobs)
        await batcher.close()
        return calls, results

    calls, results = asyncio.run(main())
    assert results[:4] == [[f"r{i}a/{i}/1", f"r{i}b/{i + 100}/1"] for i in range(4)]
    assert results[4] == ["x/7/3"]
    assert all(len(prompts) <= 5 for prompts, _ in calls)
    # 8 prompts with k=1 need two calls of at most 5; the k=3 request has a call of its own.
    assert sorted(len(p) for p, k in calls if k == 1) == [4, 4] and [len(p) for p, k in calls if k == 3] == [1]


def test_batcher_refuses_oversized_and_times_out():
    async def main():
        release = threading.Event()

        def slow(prompts, k, seeds):
            release.wait(5)
            return list(prompts)

        batcher = Batcher(slow, max_batch=2, wait_s=0, timeout_s=0.2)
        await batcher.start()
        with pytest.raises(ServeError) as too_big:
            await batcher.submit(["a", "b", "c"], [1, 2, 3], 1)
        with pytest.raises(ServeError) as late:
            await batcher.submit(["a"], [1], 1)
        release.set()
        batcher.timeout_s = 5
        ok = await batcher.submit(["b"], [2], 1)
        await batcher.close()
        return too_big.value, late.value, ok

    too_big, late, ok = asyncio.run(main())
    assert too_big.status == 413 and late.status == 504 and ok == ["b"]


def test_batcher_reports_engine_failures():
    async def main():
        def broken(prompts, k, seeds):
            raise RuntimeError("CUDA error: device lost\nsecond line")

        batcher = Batcher(broken, max_batch=4, wait_s=0)
        await batcher.start()
        with pytest.raises(ServeError) as error:
            await batcher.submit(["a"], [1], 1)
        alive = batcher.alive
        await batcher.close()
        return error.value, alive

    error, alive = asyncio.run(main())
    assert error.status == 500 and error.message == "engine error (details in the server log)"
    assert alive


# --- pure parts ---------------------------------------------------------------------------------------
def test_compare_answer_with_swap():
    original = Comparison(1, 2 / 3, "first says 1", (1, 1, 2))
    swapped = Comparison(2, 1.0, "swapped says 2", (2, 2, None))  # response 1 of the original order, twice
    answer = compare_answer(original, swapped)
    assert answer == {
        "winner": 1,
        "votes": [1, 1, 2],
        "votes_swapped": [1, 1, None],
        "vote_share": 4 / 6,
        "agreement": True,
        "reasoning": "first says 1",
    }
    disagree = compare_answer(Comparison(2, 1.0, "o", (2,)), Comparison(2, 1.0, "s", (2,)))
    assert disagree["agreement"] is False and disagree["winner"] == 2 and disagree["reasoning"] == "o"
    assert reward_of(original, swapped) == 4 / 6 and reward_of(Comparison(None, 0.0, "", (None,))) == 0.0


def test_get_reward_items():
    chat = (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
        "<|vision_end|>What colour is it?<|im_end|>\n<|im_start|>assistant\n"
    )
    items = reward_items([chat + "It is red.<|im_end|>"], [chat], ["It is blue."])
    assert items[0].question == "What colour is it?" and items[0].response == "It is red."
    assert items[0].reference == "It is blue." and items[0].images == []
    # Without prompts, the response is what follows the last assistant header.
    assert response_text(chat + "Red.<|endoftext|>", None) == "Red." and question_text("plain") == "plain"
    label = {"question": "Colour of the shape?", "images": "a.png", "reference": "blue"}
    items = reward_items(
        ["Q A: red", json.dumps({"response": "green", "images": ["b.png"]})],
        ["Q A:", "Q A:"],
        [json.dumps(label), label],
    )
    assert [(i.question, i.images, i.response, i.reference) for i in items] == [
        ("Colour of the shape?", ["a.png"], "red", "blue"),
        ("Colour of the shape?", ["b.png"], "green", "blue"),
    ]
    for args, words in (
        (([""], None, ["r"]), "no question"),
        ((["a"], ["p"], None), "no reference"),
        ((["a"], ["p"], [{"reference": 3}]), "labels[0].reference must be a string"),
        ((["a"], ["p", "q"], None), "2 prompts for 1 queries"),
    ):
        with pytest.raises(ServeError, match=words.replace("[", r"\[").replace("]", r"\]")):
            reward_items(*args)


def test_serve_cli_checks_before_loading(tmp_path, capsys):
    import socket

    from r1reward.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--k", "0"]) == 2
    assert "--k must be at least 1, got 0" in capsys.readouterr().err
    for flags, words in (
        (["--image-root", str(tmp_path / "nowhere")], "--image-root: folder not found"),
        (["--max-batch", "8", "--max-queue", "4"], "--max-queue (4) must be at least --max-batch (8)"),
        (["--decode-slots", "0"], "--decode-slots must be at least 1"),
        (["--api-key", " "], "--api-key (or R1REWARD_API_KEY) is empty"),
    ):
        assert main(["serve", "--model", str(tmp_path), *flags]) == 2
        assert words in capsys.readouterr().err, flags
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


# --- bounded work ----------------------------------------------------------------------------------------
def test_batcher_counts_generations_bounds_its_queue_and_drops_jobs_of_clients_that_left():
    async def main():
        release, calls, dropped = threading.Event(), [], []

        def slow(prompts, k, seeds):
            calls.append(list(prompts))
            release.wait(5)
            return list(prompts)

        batcher = Batcher(slow, max_batch=4, max_queue=6, wait_s=0, timeout_s=5, on_drop=lambda: dropped.append(1))
        await batcher.start()
        with pytest.raises(ServeError) as too_big:  # 3 prompts x k=2 = 6 generations > 4
            await batcher.submit(["a", "b", "c"], [1, 2, 3], 2)
        running = asyncio.create_task(batcher.submit(["run"], [1], 4))  # 4 generations, in the engine
        await asyncio.sleep(0.05)
        leaving = asyncio.create_task(batcher.submit(["left"], [2], 1))  # waits behind it
        await asyncio.sleep(0.05)
        with pytest.raises(ServeError) as full:  # 4 + 1 + 2 > 6
            await batcher.submit(["x", "y"], [3, 4], 1)
        leaving.cancel()
        await asyncio.sleep(0.05)
        release.set()
        results = [await running, await batcher.submit(["after"], [5], 1)]
        queued = batcher.queued
        await batcher.close()
        return too_big.value, full.value, calls, dropped, results, queued

    too_big, full, calls, dropped, results, queued = asyncio.run(main())
    assert too_big.status == 413 and "6 generations" in too_big.message
    assert full.status == 503 and full.headers["Retry-After"] == "1" and "--max-queue 6" in full.message
    assert calls == [["run"], ["after"]] and dropped == [1]  # the job whose client left never ran
    assert results == [["run"], ["after"]] and queued == 0


def test_a_poison_request_is_found_by_halving_not_by_rerunning_each_neighbour():
    async def main():
        calls = []

        def run(prompts, k, seeds):
            calls.append(len(prompts))
            if "poison" in prompts:
                raise ValueError("prompt too long")
            return list(prompts)

        batcher = Batcher(run, max_batch=64, wait_s=0.2)
        await batcher.start()
        names = [f"r{i}" for i in range(16)]
        names[11] = "poison"
        answers = await asyncio.gather(
            *(batcher.submit([n], [i], 1) for i, n in enumerate(names)), return_exceptions=True
        )
        await batcher.close()
        return calls, names, answers

    calls, names, answers = asyncio.run(main())
    assert [a.status for a in answers if isinstance(a, ServeError)] == [400]
    assert [a for a in answers if not isinstance(a, ServeError)] == [[n] for n in names if n != "poison"]
    assert calls[0] == 16 and len(calls) <= 1 + 2 * 4  # one by one would take 17 calls


def test_rank_refuses_too_many_responses_before_pairing(model):
    with TestClient(create_app(RewardService(model, "fake", max_batch=10**9, max_responses=8))) as client:
        start = time.monotonic()
        answer = client.post("/v1/rank", json={"question": "q", "responses": ["x"] * 5000})
        assert answer.status_code == 413 and "--max-responses 8" in answer.json()["error"]
        assert time.monotonic() - start < 1.0


# --- what clients may make the server open --------------------------------------------------------------
def test_untrusted_images_stay_inside_the_roots_and_the_bounds(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "red.png").write_bytes(png_bytes())
    (outside / "secret.png").write_bytes(png_bytes())
    (root / "link.png").symlink_to(outside / "secret.png")
    policy = ImagePolicy(roots=(root,), max_bytes=len(png_bytes()) + 10, max_pixels=40 * 30)
    assert load_untrusted_image(str(root / "red.png"), policy).size == (40, 30)
    assert load_untrusted_image("red.png", policy).mode == "RGB"
    refusals = {}
    for source in (str(outside / "secret.png"), str(root / "link.png"), "../outside/secret.png", str(root / "no.png")):
        with pytest.raises(ImageRefused) as refused:
            load_untrusted_image(source, policy)
        refusals[source] = (str(refused.value), refused.value.detail)
    assert len({message for message, _ in refusals.values()}) == 1  # one generic line for every refusal
    assert all(source in detail or "outside" in detail for source, (_, detail) in refusals.items())
    with pytest.raises(ImageRefused, match="no such image"):  # no roots: no paths at all
        load_untrusted_image(str(root / "red.png"), ImagePolicy())

    def encoded(image: Image.Image, fmt: str) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return "data:image/x;base64," + base64.b64encode(buffer.getvalue()).decode()

    with pytest.raises(ImageRefused, match="--max-image-pixels 1200"):
        load_untrusted_image(encoded(Image.new("RGB", (41, 30)), "PNG"), policy)
    with pytest.raises(ImageRefused, match="not a decodable image in an allowed format"):
        load_untrusted_image(encoded(Image.new("RGB", (4, 3)), "TIFF"), ImagePolicy())
    with pytest.raises(ImageRefused, match="--max-image-mb"):
        load_untrusted_image(encoded(Image.effect_noise((40, 30), 50).convert("RGB"), "PNG"), policy)
    gif = Image.new("P", (4, 3))
    frames = encoded(gif, "GIF")
    assert load_untrusted_image(frames, policy).size == (4, 3)


def test_api_key_guards_every_route_but_health_and_metrics(model):
    with TestClient(create_app(RewardService(model, "fake"), api_key="s3cret")) as client:
        body = {"question": "q", "response_1": "a", "response_2": "b"}
        assert client.post("/v1/compare", json=body).status_code == 401
        assert client.post("/v1/compare", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/v1/models").status_code == 401 and client.get("/openapi.json").status_code == 401
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
        ok = client.post("/v1/compare", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_images_are_decoded_by_a_bounded_number_of_requests_at_once(model):
    """Each image is bounded; so is how many requests decode theirs at once, which bounds the memory."""
    active, peak, lock = [0], [0], threading.Lock()
    render = model.prompts_for

    def counted(pairs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return render(pairs)

    model.prompts_for = counted
    service = RewardService(model, "fake", max_batch=64, decode_slots=2)
    with TestClient(create_app(service)) as client:
        body = {"question": "q", "images": [data_uri()], "response_1": "a", "response_2": "b"}
        answers = _concurrently(lambda i: client.post("/v1/compare", json={**body, "seed": i}), list(range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert peak[0] == 2
