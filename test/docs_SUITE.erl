%% Runs every ```erlang block of README.md and docs/*.md: a block is a
%% sequence of Erlang expressions whose matches are its assertions.
-module(docs_SUITE).
-include_lib("common_test/include/ct.hrl").
-compile([export_all, nowarn_export_all]).

all() -> [erlang_examples_run].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

erlang_examples_run(_) ->
    Root = filename:dirname(filename:dirname(proplists:get_value(source, ?MODULE:module_info(compile)))),
    Files = [filename:join(Root, "README.md") | filelib:wildcard(filename:join([Root, "docs", "*.md"]))],
    Blocks = [{F, N, B} || F <- Files, {N, B} <- blocks(F, <<"erlang">>)],
    true = length(Blocks) > 0,
    [run_block(F, N, B) || {F, N, B} <- Blocks],
    {comment, io_lib:format("~b blocks", [length(Blocks)])}.

%% {LineNumber, Text} of each fenced block of the given language.
blocks(File, Lang) ->
    {ok, Bin} = file:read_file(File),
    Lines = binary:split(Bin, <<"\n">>, [global]),
    collect(Lines, 1, <<"```", Lang/binary>>, none, []).

collect([], _, _, _, Acc) -> lists:reverse(Acc);
collect([L | Rest], N, Fence, none, Acc) ->
    case string:trim(L) of
        Fence -> collect(Rest, N + 1, Fence, {N + 1, []}, Acc);
        _ -> collect(Rest, N + 1, Fence, none, Acc)
    end;
collect([L | Rest], N, Fence, {Start, Body}, Acc) ->
    case string:trim(L) of
        <<"```">> -> collect(Rest, N + 1, Fence, none, [{Start, lists:reverse(Body)} | Acc]);
        _ -> collect(Rest, N + 1, Fence, {Start, [[L, $\n] | Body]}, Acc)
    end.

run_block(File, Line, Body) ->
    Text = unicode:characters_to_list(iolist_to_binary(Body)),
    try
        {ok, Tokens, _} = erl_scan:string(Text, Line),
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        erl_eval:exprs(Exprs, erl_eval:new_bindings())
    catch
        Class:Reason:Stack ->
            ct:fail("~ts:~b: example failed: ~p:~p~n~p~n~ts", [File, Line, Class, Reason, Stack, Text])
    end.
