%% The call bridge: py:call/eval/exec, contexts, timeouts, errors, send.
-module(py_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [call_basics, dotted_names, kwargs, eval_and_exec, shared_namespace,
     context_runs_on_one_thread, context_order, blocked_workers_do_not_stop_others,
     timeout_interrupts_python, timeout_frees_queued_call, exception_structure,
     no_atoms_from_python, c_extensions_import, send_from_python_thread,
     bad_arguments_are_badarg, unknown_context, unknown_module,
     send_deep_term_from_small_stack_does_not_crash, big_request_copied_off_scheduler,
     shared_call_not_stranded_by_context_call].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

call_basics(_) ->
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2])),
    ?assertEqual({ok, 3}, py:call(<<"operator">>, <<"add">>, [1, 2])),
    ?assertEqual({ok, 3}, py:call("operator", "add", [1, 2])),
    ?assertEqual({ok, <<"abc">>}, py:call(builtins, str, [abc])).

dotted_names(_) ->
    ?assertEqual({ok, <<"a/b">>}, py:call('os.path', join, [<<"a">>, <<"b">>])),
    ?assertEqual({ok, <<"a/b">>}, py:call(os, 'path.join', [<<"a">>, <<"b">>])),
    ?assertEqual({ok, <<"xml.dom.minidom">>}, py:call(<<"xml.dom.minidom">>, <<"__name__.__str__">>, [])).

kwargs(_) ->
    ?assertEqual({ok, [[1], #{<<"a">> => 2, <<"b">> => 3}]},
                 py:call(bridge_helpers, kwargs_echo, [1], #{a => 2, <<"b">> => 3})),
    ?assertEqual({ok, <<"[1, 2]">>}, py:call(json, dumps, [[1, 2]], #{}, #{timeout => 5000})),
    Ctx = py:context(2),
    ?assertEqual({ok, <<"{\"a\": 1, \"b\": 2}">>},
                 py:call(Ctx, json, dumps, [#{b => 2, a => 1}], #{sort_keys => true})).

eval_and_exec(_) ->
    ?assertEqual({ok, 4}, py:eval(<<"2 + 2">>)),
    ?assertEqual({ok, 10}, py:eval("x * y", #{x => 2, y => 5})),
    %% Locals are visible inside comprehensions too.
    ?assertEqual({ok, [0, 3, 6]}, py:eval(<<"[i * k for i in range(3)]">>, #{k => 3})),
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"counter = 41\ndef bump():\n    global counter\n    counter += 1\n    return counter\n">>),
    ?assertEqual({ok, 42}, py:eval(Ctx, <<"bump()">>, #{})),
    ?assertEqual({ok, 43}, py:eval(Ctx, <<"bump()">>, #{}, #{timeout => 1000})),
    %% Another context does not see those names.
    {error, {python, <<"NameError">>, _, _}} = py:eval(py:context(2), <<"counter">>, #{}),
    {error, {python, <<"SyntaxError">>, _, _}} = py:exec(<<"def (">>),
    {error, {python, <<"ValueError">>, _, _}} = py:exec(<<"x = 1", 0, "y = 2">>).

shared_namespace(_) ->
    ok = py:exec(<<"shared_value = 'everywhere'">>),
    [?assertEqual({ok, <<"everywhere">>}, py:eval(<<"shared_value">>)) || _ <- lists:seq(1, 20)],
    ok = py:exec(any, <<"del shared_value">>, #{timeout => 1000}).

context_runs_on_one_thread(_) ->
    [begin
         Ctx = py:context(N),
         {ok, Id} = py:call(Ctx, bridge_helpers, thread_ident, []),
         Ids = [element(2, py:call(Ctx, bridge_helpers, thread_ident, [])) || _ <- lists:seq(1, 20)],
         ?assertEqual([Id], lists:usort(Ids))
     end || N <- lists:seq(1, py:contexts())],
    Distinct = lists:usort([element(2, py:call(py:context(N), bridge_helpers, thread_ident, []))
                            || N <- lists:seq(1, py:contexts())]),
    ?assertEqual(py:contexts(), length(Distinct)).

context_order(_) ->
    Ctx = py:context(3),
    ok = py:exec(Ctx, <<"seen = []">>),
    Self = self(),
    %% Many processes fire at once; per-process order must hold on the context.
    Pids = [spawn_link(fun() ->
                               [ok = py:exec(Ctx, iolist_to_binary(io_lib:format("seen.append((~b, ~b))", [P, I])))
                                || I <- lists:seq(1, 50)],
                               Self ! {done, P}
                       end) || P <- lists:seq(1, 4)],
    [receive {done, P} -> ok end || P <- lists:seq(1, length(Pids))],
    {ok, Seen} = py:eval(Ctx, <<"seen">>, #{}),
    ?assertEqual(200, length(Seen)),
    [?assertEqual(lists:seq(1, 50), [I || {P2, I} <- Seen, P2 =:= P]) || P <- lists:seq(1, 4)].

blocked_workers_do_not_stop_others(_) ->
    N = py:contexts(),
    Self = self(),
    Blocked = [spawn_link(fun() -> Self ! {blocked, py:call(bridge_helpers, block, [gate])} end)
               || _ <- lists:seq(1, N - 1)],
    wait_until(fun() -> maps:get(busy, py_nif:info()) >= N - 1 end),
    %% With N-1 workers stuck, calls keep being served by the last one.
    [?assertEqual({ok, I + 1}, py:call(operator, add, [I, 1], #{}, #{timeout => 5000}))
     || I <- lists:seq(1, 100)],
    %% Released through the shared queue, like the calls above: any worker,
    %% context N included, may be one of the blocked ones (a spinning worker
    %% takes the first job), and a call pinned to it would wait for ever.
    {ok, true} = py:call(bridge_helpers, release, [gate]),
    [receive {blocked, R} -> ?assertEqual({ok, gate}, R) end || _ <- Blocked],
    ok.

timeout_interrupts_python(_) ->
    Ctx = py:context(1),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout},
                 py:call(Ctx, bridge_helpers, spin_until_interrupted, [first], #{}, #{timeout => 100})),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 2000),
    %% The same context is free again, and Python saw erlang.CallTimeout.
    ?assertEqual({ok, 2}, py:call(Ctx, operator, add, [1, 1], #{}, #{timeout => 5000})),
    ?assertEqual({ok, [<<"first">>]}, py:eval(Ctx, <<"[t.decode() if isinstance(t, bytes) else str(t) "
                                                  "for t in __import__('bridge_helpers').timeouts_seen]">>, #{})),
    %% No timeout leaks into the next call on that thread.
    [?assertEqual({ok, 1}, py:eval(Ctx, <<"1">>, #{})) || _ <- lists:seq(1, 50)].

timeout_frees_queued_call(_) ->
    Ctx = py:context(2),
    Self = self(),
    spawn_link(fun() -> Self ! {held, py:call(Ctx, bridge_helpers, block, [hold])} end),
    wait_until(fun() -> maps:get(busy, py_nif:info()) >= 1 end),
    %% Queued behind the blocked call: times out without ever running.
    ?assertEqual({error, timeout}, py:exec(Ctx, <<"ran_queued = True">>, #{timeout => 50})),
    {ok, true} = py:call(bridge_helpers, release, [hold]),
    receive {held, R} -> ?assertEqual({ok, hold}, R) end,
    ?assertMatch({error, {python, <<"NameError">>, _, _}}, py:eval(Ctx, <<"ran_queued">>, #{})).

exception_structure(_) ->
    {error, {python, Type, Msg, Tb}} = py:call(json, loads, [<<"{bad">>]),
    ?assertEqual(<<"json.decoder.JSONDecodeError">>, Type),
    ?assertMatch(<<"Expecting property name", _/binary>>, Msg),
    ?assertNotEqual(nomatch, binary:match(Tb, <<"Traceback (most recent call last)">>)),
    ?assertNotEqual(nomatch, binary:match(Tb, <<"json/decoder.py">>)),
    {error, {python, <<"KeyError">>, <<"'k'">>, _}} = py:eval(<<"{}['k']">>).

no_atoms_from_python(_) ->
    Before = erlang:system_info(atom_count),
    [{error, {python, _, <<"boom">>, _}} =
         py:call(bridge_helpers, raise_named, [iolist_to_binary(["Fresh", integer_to_list(I)])])
     || I <- lists:seq(1, 200)],
    %% erlang.Atom of an unknown name is refused, not created.
    {error, {python, <<"ValueError">>, _, _}} = py:eval(<<"__import__('erlang').Atom('never_seen_atom_xyz_123')">>),
    ?assertEqual({ok, ok}, py:eval(<<"__import__('erlang').Atom('ok')">>)),
    ?assert(erlang:system_info(atom_count) - Before < 5).

c_extensions_import(_) ->
    [?assertMatch({ok, _}, py:eval(iolist_to_binary(["__import__('", M, "').__name__"])))
     || M <- ["_json", "_hashlib", "_decimal", "sqlite3", "zlib", "_ssl", "_ctypes"]],
    ?assertEqual({ok, <<"1.1">>}, py:eval(<<"str(__import__('decimal').Decimal('1.1'))">>)),
    ?assertEqual({ok, [{1}]}, py:eval(<<"__import__('sqlite3').connect(':memory:').execute('select 1').fetchall()">>)).

send_from_python_thread(_) ->
    {ok, true} = py:call(bridge_helpers, send_from_thread, [self(), {hello, [1, <<"two">>]}]),
    receive {hello, [1, <<"two">>]} -> ok after 5000 -> ct:fail(no_message) end,
    %% Sending to a dead process is fine, as in Erlang.
    Dead = spawn(fun() -> ok end),
    wait_until(fun() -> not is_process_alive(Dead) end),
    ?assertEqual({ok, none}, py:eval(<<"__import__('erlang').send(p, 1)">>, #{p => Dead})),
    {error, {python, <<"TypeError">>, _, _}} = py:eval(<<"__import__('erlang').send(1, 1)">>).

bad_arguments_are_badarg(_) ->
    Bad = [fun() -> py:call(1, add, []) end,
           fun() -> py:call(operator, add, not_a_list) end,
           fun() -> py:call(operator, add, [1 | 2]) end,
           fun() -> py:call(operator, add, [], not_a_map) end,
           fun() -> py:call(operator, add, [], #{}, #{timeout => -1}) end,
           fun() -> py:call(operator, add, [], #{}, #{timeout => foo}) end,
           fun() -> py:eval(123) end,
           fun() -> py:eval(<<"1">>, [not_a_map]) end,
           fun() -> py:exec({tuple}) end,
           fun() -> py:exec(<<255, 0>>) end,
           fun() -> py:context(0) end,
           fun() -> py:call({not_ctx}, m, f, [], #{}, #{}) end,
           fun() -> py_nif:submit(-1, make_ref(), {exec, <<"1">>}) end,
           fun() -> py_nif:submit(0, not_ref, {exec, <<"1">>}) end,
           fun() -> py_nif:submit(0, make_ref(), {call, <<"m">>}) end,
           fun() -> py_nif:cancel(make_ref()) end,
           fun() -> py_nif:start(0) end,
           fun() -> py:eval(any, <<"1">>, #{}, #{timeout => 1 bsl 40}) end],
    [?assertError(badarg, F()) || F <- Bad],
    ?assertEqual({ok, 1}, py:eval(<<"1">>)).

unknown_context(_) ->
    ?assertEqual({error, no_context}, py:call(py:context(100000), operator, add, [1, 2])).

unknown_module(_) ->
    ?assertMatch({error, {python, <<"ModuleNotFoundError">>, _, _}}, py:call(no_such_module_xyz, f, [])),
    ?assertMatch({error, {python, <<"AttributeError">>, _, _}}, py:call(operator, no_such_fn, [])).

wait_until(F) ->
    erlpy_test:wait_until(F).

%% Regression: converting for erlang.send() on a thread with a small stack
%% overflowed it (VM segfault) before the converter watched its stack.
send_deep_term_from_small_stack_does_not_crash(_) ->
    ?assertEqual({ok, <<"TermTooDeep">>},
                 py:call(bridge_helpers, deep_send_small_stack, [self(), 10000], #{}, #{timeout => 30000})),
    ?assertEqual({ok, <<>>}, py:call(bridge_helpers, deep_send_small_stack, [self(), 50])),
    receive [[[_ | _]]] -> ok after 5000 -> ct:fail(no_message) end.

%% A request of millions of terms is copied for the worker on a dirty
%% scheduler, not on the caller's: microstate accounting shows where the
%% time went (emulator time includes NIFs).
big_request_copied_off_scheduler(_) ->
    L = lists:seq(1, 2000000),
    msacc:start(),
    ?assertEqual({ok, 2000000}, py:call(builtins, len, [L])),
    Stats = msacc:stats(),
    msacc:stop(),
    Time = fun(Type) -> lists:sum([maps:get(emulator, C) || #{type := T, counters := C} <- Stats, T =:= Type]) end,
    ct:pal("emulator time: schedulers ~b us, dirty CPU schedulers ~b us",
           [Time(scheduler), Time(dirty_cpu_scheduler)]),
    ?assert(Time(dirty_cpu_scheduler) > Time(scheduler)).

%% Regression: a worker woken for a shared call that found a call of its own
%% context first ran that one, and the shared call waited with other
%% workers idle (for ever, if its own call blocked).
shared_call_not_stranded_by_context_call(_) ->
    Ctx = py:context(1),
    [begin
         Gate = list_to_binary("strand" ++ integer_to_list(I)),
         Self = self(),
         spawn_link(fun() -> Self ! {gate, py:call(Ctx, bridge_helpers, block, [Gate])} end),
         ?assertEqual({ok, I}, py:call(any, operator, add, [I, 0], #{}, #{timeout => 10000})),
         {ok, true} = py:call(bridge_helpers, release, [Gate]),
         receive {gate, R} -> ?assertEqual({ok, Gate}, R) end
     end || I <- lists:seq(1, 50)],
    ok.
