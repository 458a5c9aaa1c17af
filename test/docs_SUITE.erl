%% Runs every ```erlang and ```python block of README.md and docs/*.md, in
%% document order.  An Erlang block is a sequence of expressions whose
%% matches are its assertions; a Python block is executed in the module
%% `docs_example', so that the Erlang blocks after it can call what it defines.
-module(docs_SUITE).
-include_lib("common_test/include/ct.hrl").
-compile([export_all, nowarn_export_all]).

all() -> [erlang_examples_run].

%% docs/nodes.md's examples need worker nodes, hence a distributed node.
init_per_suite(Config) ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("ct_docs_" ++ os:getpid()), shortnames]);
        _ ->
            ok
    end,
    _ = application:load(erlpy),
    ok = application:set_env(erlpy, worker_nodes, 2),
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config),
    ok = application:set_env(erlpy, worker_nodes, 0),
    _ = net_kernel:stop(),
    ok.

erlang_examples_run(_) ->
    Root = filename:dirname(filename:dirname(proplists:get_value(source, ?MODULE:module_info(compile)))),
    Files = [filename:join(Root, "README.md") | filelib:wildcard(filename:join([Root, "docs", "*.md"]))],
    Blocks = [{F, Lang, N, B} || F <- Files, {Lang, N, B} <- blocks(F)],
    Counts = [{L, length([x || {_, L2, _, _} <- Blocks, L2 =:= L])} || L <- [erlang, python]],
    [true = N > 0 || {_, N} <- Counts],
    ok = py:exec(<<"import sys, types\nsys.modules['docs_example'] = types.ModuleType('docs_example')">>),
    [run_block(F, Lang, N, B) || {F, Lang, N, B} <- Blocks],
    {comment, io_lib:format("~p", [Counts])}.

%% {Lang, LineNumber, Text} of each erlang or python fenced block.
blocks(File) ->
    {ok, Bin} = file:read_file(File),
    Lines = binary:split(Bin, <<"\n">>, [global]),
    collect(Lines, 1, none, []).

collect([], _, _, Acc) -> lists:reverse(Acc);
collect([L | Rest], N, none, Acc) ->
    case string:trim(L) of
        <<"```erlang">> -> collect(Rest, N + 1, {erlang, N + 1, []}, Acc);
        <<"```python">> -> collect(Rest, N + 1, {python, N + 1, []}, Acc);
        _ -> collect(Rest, N + 1, none, Acc)
    end;
collect([L | Rest], N, {Lang, Start, Body}, Acc) ->
    case string:trim(L) of
        <<"```">> -> collect(Rest, N + 1, none, [{Lang, Start, lists:reverse(Body)} | Acc]);
        _ -> collect(Rest, N + 1, {Lang, Start, [[L, $\n] | Body]}, Acc)
    end.

run_block(File, python, Line, Body) ->
    Code = iolist_to_binary([lists:duplicate(Line - 1, $\n) | Body]),
    case py:eval(<<"exec(compile(code, file.decode(), 'exec'), __import__('sys').modules['docs_example'].__dict__)">>,
                 #{code => Code, file => unicode:characters_to_binary(File)}) of
        {ok, none} -> ok;
        Error -> ct:fail("~ts:~b: python example failed: ~p", [File, Line, Error])
    end;
run_block(File, erlang, Line, Body) ->
    Text = unicode:characters_to_list(iolist_to_binary(Body)),
    try
        {ok, Tokens, _} = erl_scan:string(Text, Line),
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        erl_eval:exprs(Exprs, erl_eval:new_bindings())
    catch
        Class:Reason:Stack ->
            ct:fail("~ts:~b: example failed: ~p:~p~n~p~n~ts", [File, Line, Class, Reason, Stack, Text])
    end.
