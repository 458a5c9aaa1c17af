%% @private
%% @doc The workers one HTTP server may take at once (`max_workers') and the
%% requests waiting for one (at most `max_waiting' new requests; more are
%% refused).  No server process in the way: an `atomics' counter of the
%% workers taken, an ETS ordered set of the waiting processes, oldest first,
%% and an ETS set of the processes holding a worker.  A release hands its
%% worker to the oldest waiter.
%%
%% A waiter is never stranded: it enqueues itself, then tries once more, so
%% a worker freed between its first try and its enqueueing is seen either by
%% that second try or by the release that frees it.  A process killed while
%% holding a worker does not keep it: when every worker is taken, holders
%% that died are looked for (at most `max_workers' of them) and their workers
%% given back; a waiter that died is skipped when its turn comes.
-module(erlpy_http_slots).

-export([new/2, acquire/2, release/1, requests/0]).

-define(TAKEN, 1).
-define(WAITING, 2). %% kept here: ets:info(Tab, size) costs tens of microseconds

-record(slots, {counts :: atomics:atomics_ref(), %% ?TAKEN, ?WAITING
                max :: pos_integer() | infinity,
                waiting :: ets:tid(),            %% {Key, Pid}, Key = arrival order
                holders :: ets:tid(),            %% {Pid}
                max_waiting :: non_neg_integer()}).
-opaque slots() :: #slots{}.
-export_type([slots/0]).

%% @doc A gate of `Max' workers with room for `MaxWaiting' waiting new
%% requests.  The calling process owns its ETS tables.
-spec new(pos_integer() | infinity, non_neg_integer()) -> slots().
new(Max, MaxWaiting) when (is_integer(Max) andalso Max > 0 orelse Max =:= infinity),
                          is_integer(MaxWaiting), MaxWaiting >= 0 ->
    Opts = [public, {write_concurrency, true}],
    #slots{counts = atomics:new(2, [{signed, true}]), max = Max, max_waiting = MaxWaiting,
           waiting = ets:new(?MODULE, [ordered_set | Opts]), holders = ets:new(?MODULE, [set | Opts])}.

%% @doc Takes a worker for the calling process (one at a time), waiting for
%% one if need be.  `first' (a new request) is refused with `busy' when
%% `max_waiting' requests wait already; `next' (a later job of a request in
%% progress) always waits.
-spec acquire(slots(), first | next) -> ok | busy.
acquire(S, first) ->
    counters:add(request_counter(), 1, 1),
    acquire1(S, first);
acquire(S, next) ->
    acquire1(S, next).

%% @doc New requests this node's servers have begun (`erlpy_nodes_http'
%% recycles a worker node after `max_requests').
-spec requests() -> non_neg_integer().
requests() ->
    counters:get(request_counter(), 1).

request_counter() ->
    case persistent_term:get({?MODULE, requests}, undefined) of
        undefined ->
            C = counters:new(1, [write_concurrency]),
            persistent_term:put({?MODULE, requests}, C),
            persistent_term:get({?MODULE, requests});
        C ->
            C
    end.

acquire1(#slots{max = infinity}, _Kind) ->
    ok;
acquire1(#slots{counts = Counts, holders = Holders, max_waiting = MaxWaiting} = S, Kind) ->
    try
        Got = take(S) orelse (reclaim(S) andalso take(S)) orelse
            case Kind =:= first andalso atomics:get(Counts, ?WAITING) >= MaxWaiting of
                true -> busy;
                false -> wait(S)
            end,
        case Got of
            busy -> busy;
            _ -> true = ets:insert(Holders, {self()}), ok
        end
    catch
        %% The server is gone (its tables with it): no new requests, and
        %% nothing left to cap for those in progress.
        error:badarg when Kind =:= first -> busy;
        error:badarg -> ok
    end.

%% @doc Gives the calling process's worker back (to the oldest waiter, if any).
-spec release(slots()) -> ok.
release(#slots{max = infinity}) ->
    ok;
release(#slots{holders = Holders} = S) ->
    try ets:take(Holders, self()) of
        [_] -> give_back(S);
        [] -> ok %% not held (given back for a dead process: never while alive)
    catch
        error:badarg -> ok
    end.

give_back(#slots{counts = Counts} = S) ->
    atomics:sub(Counts, ?TAKEN, 1),
    hand_over(S).

%% One more worker taken, if fewer than max are.
take(#slots{counts = Counts, max = Max} = S) ->
    case atomics:get(Counts, ?TAKEN) of
        N when N >= Max -> false;
        N -> atomics:compare_exchange(Counts, ?TAKEN, N, N + 1) =:= ok orelse take(S)
    end.

%% Workers held by processes that died: given back.  True if there were any.
reclaim(#slots{holders = Holders} = S) ->
    Dead = [Pid || {Pid} <- ets:tab2list(Holders), not is_process_alive(Pid)],
    lists:foldl(fun(Pid, Any) ->
                        case ets:take(Holders, Pid) of
                            [_] -> give_back(S), true;
                            [] -> Any
                        end
                end, false, Dead).

wait(#slots{waiting = Tab, counts = Counts} = S) ->
    Key = erlang:unique_integer([monotonic]),
    atomics:add(Counts, ?WAITING, 1),
    true = ets:insert(Tab, {Key, self()}),
    case take(S) of
        true ->
            case ets:take(Tab, Key) of
                [_] -> atomics:sub(Counts, ?WAITING, 1), ok;
                %% A release handed us one as well: give that one back.
                [] -> receive {?MODULE, Key} -> give_back(S) end
            end;
        false ->
            receive {?MODULE, Key} -> ok end
    end.

%% A worker was freed: the oldest waiter gets it, if nobody took it first.
hand_over(#slots{waiting = Tab, counts = Counts} = S) ->
    case ets:first(Tab) of
        '$end_of_table' ->
            ok;
        Key ->
            case take(S) of
                false ->
                    ok;
                true ->
                    case ets:take(Tab, Key) of
                        [{Key, Pid}] ->
                            atomics:sub(Counts, ?WAITING, 1),
                            case is_process_alive(Pid) of
                                true -> Pid ! {?MODULE, Key}, ok;
                                false -> give_back(S)
                            end;
                        [] ->
                            give_back(S) %% it left or took one itself: try the next
                    end
            end
    end.
