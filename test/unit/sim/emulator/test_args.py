"""The `vllm serve` command line as the emulator reads it: the recipe's forms, both flag spellings,
unknown flags never failing, and errors only where vLLM itself would fail."""

from __future__ import annotations

import pytest

from dpctl import cli
from dpsim.emulator.args import DEFAULT_MODEL, ServeArgs, ServeArgsError, parse_serve_args


def test_recipe_simple_runner_command() -> None:
    args = parse_serve_args(
        [
            "--port=8000",
            "--model=ibm-granite/granite-3.3-2b-instruct",
            "--enable-sleep-mode",
            "--max-model-len=32768",
            "--gpu-memory-utilization=0.8",
        ]
    )
    assert args == ServeArgs(
        model="ibm-granite/granite-3.3-2b-instruct",
        port=8000,
        enable_sleep_mode=True,
        max_model_len=32768,
        gpu_memory_utilization=0.8,
    )
    assert args.names == ("ibm-granite/granite-3.3-2b-instruct",)


def test_recipe_staged_model_runner_command() -> None:
    path = "/pvcs/local/vcp/hf/models--ibm-granite--granite-3.3-2b-instruct/snapshots/707f574c"
    args = parse_serve_args(["--port=8000", path, "--enable-sleep-mode", "--max-model-len=32768"])
    assert (args.model, args.port, args.enable_sleep_mode) == (path, 8000, True)


def test_space_separated_and_underscore_forms() -> None:
    args = parse_serve_args(["m", "--port", "8001", "--host", "127.0.0.2", "--max_model_len", "100"])
    assert (args.model, args.port, args.host, args.max_model_len) == ("m", 8001, "127.0.0.2", 100)


def test_defaults() -> None:
    args = parse_serve_args([])
    assert (args.model, args.port, args.host, args.enable_sleep_mode) == (DEFAULT_MODEL, 8000, None, False)


def test_positional_model_wins_over_model_flag() -> None:
    assert parse_serve_args(["--model", "flag", "positional"]).model == "positional"


@pytest.mark.parametrize(
    "argv",
    [
        ["--kv-cache-memory=31966072012", "m"],
        ["--tensor-parallel-size", "2", "m"],
        ["--seed", "-1", "m"],
        ["--trust-remote-code", "m"],
        ["m", "--enforce-eager", "--disable-log-requests"],
        ["-tp", "2", "m"],
        ["-O3", "m"],
        ["--compilation-config.level=3", "m"],
        ["m", "--some-future-flag"],
    ],
)
def test_unknown_flags_are_ignored(argv: list[str]) -> None:
    args = parse_serve_args([*argv, "--port=9000"])
    assert (args.model, args.port) == ("m", 9000)
    assert args.ignored


def test_served_model_names() -> None:
    args = parse_serve_args(["m", "--served-model-name", "a", "b", "--port=1"])
    assert args.names == ("a", "b")
    assert parse_serve_args(["m", "--served-model-name=c"]).names == ("c",)


def test_sleep_mode_can_be_turned_off_again() -> None:
    assert not parse_serve_args(["--enable-sleep-mode", "--no-enable-sleep-mode"]).enable_sleep_mode


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port=abc"], "argument --port: invalid value"),
        (["--port"], "argument --port: expected one argument"),
        (["--port", "--enable-sleep-mode"], "argument --port: expected one argument"),
        (["--port=70000"], "not a TCP port"),
        (["--gpu-memory-utilization=1.5"], r"not in \(0, 1\]"),
        (["--max-model-len=lots"], "argument --max-model-len: invalid value"),
        (["--enable-sleep-mode=yes"], "ignored explicit argument"),
        (["--served-model-name"], "expected at least one argument"),
        (["one", "two"], "unrecognized arguments: two"),
    ],
)
def test_errors_vllm_would_also_report(argv: list[str], message: str) -> None:
    with pytest.raises(ServeArgsError, match=message):
        parse_serve_args(argv)


def test_help() -> None:
    assert parse_serve_args(["--port=1", "--help"]).help


def test_cli_hands_everything_after_serve_to_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vllm-emulator", "serve", "--port=8000", "--weird", "x", "--help"]) == 0
    assert "usage: dpctl vllm-emulator serve" in capsys.readouterr().out
    assert cli.main(["vllm-emulator", "serve", "--port=eighty"]) == 2
    assert "vllm serve: error: argument --port: invalid value: 'eighty'" in capsys.readouterr().err
