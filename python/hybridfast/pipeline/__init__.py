"""The request pipeline: one flow for every endpoint, with seams where behaviour attaches.

    context.py   RequestContext: one request's state, made once, threaded through
    hooks.py     the seams (before_route, attempt_start/attempt_end, after_answer) and Hooks

Importing this package imports nothing heavy: take what you need from its modules.
"""
