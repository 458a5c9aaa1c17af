%% @private
%% @doc The workers one HTTP server may take at once (`max_workers') and the
%% requests waiting for one (at most `max_waiting' new requests; more are
%% refused).  No server process in the way: an `atomics' counter of the
%% workers taken, and an ETS ordered set of the waiting processes, oldest
%% first.  A release hands its worker to the oldest waiter.
%%
%% A waiter that gives up is never stranded: it enqueues itself, then tries
%% once more, so a worker freed between its first try and its enqueueing is
%% seen either by that second try or by the release that frees it.
-module(erlpy_http_slots).

-export([new/2, acquire/2, release/1]).

-define(TAKEN, 1).
-define(WAITING, 2). %% ets:info(Tab, size) costs tens of microseconds

-record(slots, {counts :: atomics:atomics_ref(), %% ?TAKEN, ?WAITING
                max :: pos_integer() | infinity,
                waiting :: ets:tid(),
                max_waiting :: non_neg_integer()}).
-opaque slots() :: #slots{}.
-export_type([slots/0]).

%% @doc A gate of `Max' workers with room for `MaxWaiting' waiting new
%% requests.  The calling process owns the wait queue (an ETS table).
-spec new(pos_integer() | infinity, non_neg_integer()) -> slots().
new(Max, MaxWaiting) when (is_integer(Max) andalso Max > 0 orelse Max =:= infinity),
                          is_integer(MaxWaiting), MaxWaiting >= 0 ->
    #slots{counts = atomics:new(2, [{signed, true}]), max = Max, max_waiting = MaxWaiting,
           waiting = ets:new(?MODULE, [ordered_set, public, {write_concurrency, true}])}.

%% @doc Takes a worker, waiting for one if need be.  `first' (a new request)
%% is refused with `busy' when `max_waiting' requests wait already; `next' (a
%% later job of a request in progress) always waits.
-spec acquire(slots(), first | next) -> ok | busy.
acquire(#slots{max = infinity}, _Kind) ->
    ok;
acquire(#slots{counts = Counts, max_waiting = MaxWaiting} = S, Kind) ->
    try take(S) orelse
            case Kind =:= first andalso atomics:get(Counts, ?WAITING) >= MaxWaiting of
                true -> busy;
                false -> wait(S)
            end
    of
        true -> ok;
        Other -> Other
    catch
        error:badarg -> busy %% the server is gone
    end.

%% @doc Gives a worker back (to the oldest waiter, if any).
-spec release(slots()) -> ok.
release(#slots{max = infinity}) ->
    ok;
release(#slots{counts = Counts} = S) ->
    atomics:sub(Counts, ?TAKEN, 1),
    try hand_over(S) catch error:badarg -> ok end.

%% One more worker taken, if fewer than max are.
take(#slots{counts = Counts, max = Max} = S) ->
    case atomics:get(Counts, ?TAKEN) of
        N when N >= Max -> false;
        N -> atomics:compare_exchange(Counts, ?TAKEN, N, N + 1) =:= ok orelse take(S)
    end.

wait(#slots{waiting = Tab, counts = Counts} = S) ->
    Key = erlang:unique_integer([monotonic]),
    atomics:add(Counts, ?WAITING, 1),
    true = ets:insert(Tab, {Key, self()}),
    case take(S) of
        true ->
            case ets:take(Tab, Key) of
                [_] -> atomics:sub(Counts, ?WAITING, 1), ok;
                %% A release handed us one as well: give that one back.
                [] -> receive {?MODULE, Key} -> release(S) end
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
                                false -> release(S)
                            end;
                        [] ->
                            release(S) %% it left or took one itself: try the next
                    end
            end
    end.
