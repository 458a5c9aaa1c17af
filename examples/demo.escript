#!/usr/bin/env escript
%%! -pa _build/default/lib/erlpy/ebin
%% `make run`: a tour of the erlpy call bridge.
main(_) ->
    {ok, _} = application:ensure_all_started(erlpy),
    show("py:call(operator, add, [1, 2])", py:call(operator, add, [1, 2])),
    show("py:call('os.path', join, [<<\"/tmp\">>, <<\"x\">>])", py:call('os.path', join, [<<"/tmp">>, <<"x">>])),
    show("py:call(json, dumps, [#{k => [1, 2.5, true]}], #{sort_keys => true})",
         py:call(json, dumps, [#{k => [1, 2.5, true]}], #{sort_keys => true})),
    show("py:eval(<<\"sum(range(n))\">>, #{n => 1000000})", py:eval(<<"sum(range(n))">>, #{n => 1000000})),
    Ctx = py:context(1),
    show("py:exec(Ctx, <<\"def greet(name): return f'hello {name.decode()}'\">>)",
         py:exec(Ctx, <<"def greet(name): return f'hello {name.decode()}'">>)),
    show("py:eval(Ctx, <<\"greet(who)\">>, #{who => <<\"erlang\">>})",
         py:eval(Ctx, <<"greet(who)">>, #{who => <<"erlang">>})),
    show("py:eval(<<\"1/0\">>)", py:eval(<<"1/0">>)),
    io:format("~nTry it yourself: erl -pa _build/default/lib/erlpy/ebin, then "
              "application:ensure_all_started(erlpy).~n").

show(Expr, Result) ->
    io:format("~s~n  -> ~tp~n", [Expr, Result]).
