//! `sensor watch`: the operators' live terminal view.
