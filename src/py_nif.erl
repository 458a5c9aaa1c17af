%% @private
%% @doc The NIF library: loaded once per VM, it starts the embedded Python
%% interpreter.  Use the `py' and `py_buffer' modules instead.
-module(py_nif).

-export([start/1, stop/0, submit/3, cancel/1, info/0]).

-on_load(load/0).

-type job() :: reference().
-export_type([job/0]).

-spec load() -> ok | {error, term()}.
load() ->
    Priv = priv_dir(),
    erlang:load_nif(filename:join(Priv, "erlpy_nif"),
                    #{python_path => [unicode:characters_to_binary(D) || D <- python_dirs(Priv)]}).

priv_dir() ->
    case code:priv_dir(erlpy) of
        {error, bad_name} -> filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir -> Dir
    end.

%% python/ sits beside priv/ in the source tree; rebar3 links priv/ into
%% _build, so look beside the link's target too.
python_dirs(Priv) ->
    Real = case file:read_link_all(Priv) of
               {ok, Target} -> filename:absname(Target, filename:dirname(Priv));
               {error, _} -> Priv
           end,
    Candidates = [filename:join(filename:dirname(P), "python") || P <- [Priv, Real]],
    lists:usort([D || D <- Candidates, filelib:is_dir(D)]).

-spec start(pos_integer()) -> ok | {error, enomem}.
start(_Contexts) -> erlang:nif_error(not_loaded).

-spec stop() -> ok.
stop() -> erlang:nif_error(not_loaded).

-spec submit(non_neg_integer(), reference(), tuple()) ->
          {ok, job()} | {error, not_started | no_context | enomem}.
submit(_Context, _Ref, _Request) -> erlang:nif_error(not_loaded).

-spec cancel(job()) -> cancelled | done.
cancel(_Job) -> erlang:nif_error(not_loaded).

-spec info() -> #{contexts := non_neg_integer(), threads := non_neg_integer(),
                  busy := non_neg_integer(), queued := non_neg_integer()}.
info() -> erlang:nif_error(not_loaded).
